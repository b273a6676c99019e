# checks.x86_64-linux.vm-test: the appliance, booted for real in a VM, no GPU.
#
# Why this file exists: the module's promises (units start in order, nginx routes,
# secrets are generated, a job survives its worker being killed) can only be shown
# by booting it. The VM runs the whole host with ComfyUI in CPU mode (`comfyui.cpu`;
# the VM's nixpkgs has no cudaSupport, so torch is the CPU build), then as a
# participant:
#   1. logs in (bearer token from the generated credentials) through nginx + TLS,
#   2. saves a workflow through /userdata with a %2F in its name (nginx must pass it
#      undecoded) and lists it back,
#   3. runs a model-free workflow (EmptyImage → SaveImage) end to end and downloads
#      the PNG via /view,
#   4. queues a slower model-free job (EmptyImage → ImageBlur → SaveImage), SIGKILLs
#      the worker unit while it runs, and sees the job finish after systemd restarts
#      the worker (lease expiry → requeue),
#   5. checks that another participant cannot see that job (404/empty, not the data),
#   6. restarts user02's frontend while user02's job waits in line: user02's saved
#      workflow and queued job are still there, and the job then runs,
#   7. stops and starts one participant's frontend with systemctl.
# Run: nix build .#checks.x86_64-linux.vm-test -L   (needs KVM; ~5–10 min)
{
  pkgs,
  module,
}:

let
  domain = "workshop.test";

  # Self-signed certificate for the test domain (in the store: fine for a test,
  # never for a real host).
  testCert = pkgs.runCommand "comfy-multi-test-cert" { nativeBuildInputs = [ pkgs.openssl ]; } ''
    mkdir $out
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
      -subj "/CN=${domain}" -addext "subjectAltName=DNS:${domain}" \
      -keyout $out/key.pem -out $out/cert.pem
  '';

  # ComfyUI API-format prompts. Node types exist in every ComfyUI since 2023.
  quickPrompt = {
    "1" = {
      class_type = "EmptyImage";
      inputs = {
        width = 64;
        height = 64;
        batch_size = 1;
        color = 16711680;
      };
    };
    "2" = {
      class_type = "SaveImage";
      inputs = {
        images = [
          "1"
          0
        ];
        filename_prefix = "vmtest";
      };
    };
  };
  slowPrompt = {
    "1" = {
      class_type = "EmptyImage";
      inputs = {
        width = 1024;
        height = 1024;
        batch_size = 6;
        color = 255;
      };
    };
    "2" = {
      class_type = "ImageBlur";
      inputs = {
        image = [
          "1"
          0
        ];
        blur_radius = 31;
        sigma = 10.0;
      };
    };
    "3" = {
      class_type = "SaveImage";
      inputs = {
        images = [
          "2"
          0
        ];
        filename_prefix = "vmtest-slow";
      };
    };
  };
in
pkgs.testers.runNixOSTest {
  name = "comfy-multi";

  nodes.machine =
    { ... }:
    {
      imports = [ module ];

      virtualisation = {
        memorySize = 8192;
        cores = 4;
        diskSize = 8192;
      };

      networking.hosts."127.0.0.1" = [ domain ];
      security.pki.certificateFiles = [ "${testCert}/cert.pem" ];

      services.comfy-multi = {
        enable = true;
        inherit domain;
        tls = {
          certificate = "${testCert}/cert.pem";
          key = "${testCert}/key.pem";
        };
        participants = 2;
        gpus = [ 0 ];
        comfyui.cpu = true;
        settings.queue = {
          # Short lease so the killed worker's job is requeued quickly.
          lease_ms = 5000;
          max_attempts = 3;
        };
        environment.RUST_LOG = "info";
      };
    };

  testScript = ''
    import json
    import shlex
    import time
    import tomllib

    quick = json.dumps({"prompt": json.loads(${builtins.toJSON (builtins.toJSON quickPrompt)})})
    slow = json.dumps({"prompt": json.loads(${builtins.toJSON (builtins.toJSON slowPrompt)})})
    base = "https://${domain}"

    def token(user):
        creds = tomllib.loads(machine.succeed("cat /var/lib/comfy-multi-secrets/participants.toml"))
        return creds[user]["token"]

    def curl(user, path, method="GET", body=None, tok=None, check=True):
        cmd = ["curl", "-sS", "-X", method, "-H", "Authorization: Bearer " + (tok or token(user))]
        if check:
            cmd.append("--fail-with-body")
        if body is not None:
            cmd += ["-H", "Content-Type: application/json", "--data-raw", body]
        cmd.append(base + path)
        run = machine.succeed if check else machine.execute
        out = run(shlex.join(cmd))
        return out if check else out[1]

    def code(path, tok=""):
        auth = ["-H", "Authorization: Bearer " + tok] if tok else []
        return machine.succeed(shlex.join(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *auth, base + path])).strip()

    def wait_for(what, pred, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(2)
        raise Exception("timed out waiting for " + what)

    machine.start()
    with subtest("units come up"):
        machine.wait_for_unit("comfy-multi-secrets.service")
        machine.wait_for_unit("redis-comfy-multi.service")
        machine.wait_for_unit("comfy-multi.service")
        for u in ["user01", "user02", "instructor"]:
            machine.wait_for_unit(f"comfy-multi-frontend@{u}.service")
        machine.wait_for_unit("comfyui@gpu0.service")
        machine.wait_for_open_port(8188, timeout=600)
        machine.wait_for_unit("comfy-multi-worker@gpu0.service")
        machine.wait_for_unit("nginx.service")
        machine.wait_for_open_port(443)

    with subtest("secrets are generated, root-only"):
        machine.succeed("test -s /var/lib/comfy-multi-secrets/join-cards.txt")
        machine.succeed("test $(stat -c %a /var/lib/comfy-multi-secrets) = 700")
        machine.fail("runuser -u comfy-multi -- cat /var/lib/comfy-multi-secrets/admin-password")

    with subtest("nginx: https redirect, /userNN redirect, routing"):
        machine.succeed("curl -sS -o /dev/null -w '%{redirect_url}' http://${domain}/user01/ | grep -q '^https://${domain}/user01/'")
        machine.succeed("curl -sS -o /dev/null -w '%{http_code} %{redirect_url}' https://${domain}/user01 | grep -q '^301 https://${domain}/user01/'")
        machine.wait_until_succeeds("curl -sS --fail https://${domain}/user01/ | grep -qi '<html'", timeout=60)
        assert code("/admin/") in ("200", "302", "401"), code("/admin/")

    with subtest("userdata names keep their %2F through nginx"):
        curl("user01", "/user01/api/userdata/workflows%2Fvmtest.json?overwrite=true", "POST", body='{"nodes": []}')
        listing = curl("user01", "/user01/api/userdata?dir=workflows")
        assert "vmtest.json" in listing, listing

    with subtest("a model-free workflow runs end to end"):
        # The worker must have registered its ComfyUI's node types first.
        wait_for("object_info", lambda: "EmptyImage" in curl("user01", "/user01/object_info", check=False), 300)
        pid = json.loads(curl("user01", "/user01/prompt", "POST", body=quick))["prompt_id"]
        wait_for("quick job", lambda: "vmtest_" in curl("user01", f"/user01/history/{pid}", check=False), 300)
        hist = json.loads(curl("user01", f"/user01/history/{pid}"))
        img = hist[pid]["outputs"]["2"]["images"][0]
        sub = img.get("subfolder", "")
        q = f"filename={img['filename']}&subfolder={sub}&type=output"
        machine.succeed(shlex.join(["curl", "-sS", "--fail", "-H", "Authorization: Bearer " + token("user01"),
                                    "-o", "/tmp/out.png", f"{base}/user01/view?{q}"]))
        machine.succeed("head -c 4 /tmp/out.png | grep -q PNG")

    with subtest("killing the worker mid-job does not lose the job"):
        pid = json.loads(curl("user01", "/user01/prompt", "POST", body=slow))["prompt_id"]
        def running():
            try:
                q = json.loads(curl("user01", "/user01/queue", check=False))
            except ValueError:
                return False
            return any(pid in json.dumps(r) for r in q.get("queue_running", []))
        wait_for("slow job running", running, 300)
        machine.succeed("systemctl kill --signal=SIGKILL comfy-multi-worker@gpu0.service")
        machine.wait_until_succeeds("systemctl is-active comfy-multi-worker@gpu0.service", timeout=60)
        wait_for("slow job finished", lambda: "vmtest-slow_" in curl("user01", f"/user01/history/{pid}", check=False), 900)
        hist = json.loads(curl("user01", f"/user01/history/{pid}"))
        assert hist[pid]["status"]["status_str"] == "success", hist[pid]["status"]

    with subtest("another participant cannot see it"):
        other = curl("user02", f"/user02/history/{pid}", check=False)
        assert pid not in other, other
        c = code(f"/user01/history/{pid}", tok=token("user02"))
        assert c in ("401", "403", "404"), c

    with subtest("restarting a participant's frontend keeps their files and their queued job"):
        curl("user02", "/user02/api/userdata/workflows%2Fkeep.json?overwrite=true", "POST", body='{"nodes": [1]}')
        # user01's slow job holds the only worker, so user02's job waits in line.
        busy = json.loads(curl("user01", "/user01/prompt", "POST", body=slow))["prompt_id"]
        wait_for("user01's job running", lambda: busy in curl("user01", "/user01/queue", check=False), 300)
        mine = json.loads(curl("user02", "/user02/prompt", "POST", body=quick))["prompt_id"]
        assert mine in curl("user02", "/user02/queue"), "user02's job is not in line"
        machine.succeed("systemctl restart comfy-multi-frontend@user02.service")
        machine.wait_until_succeeds("curl -sS --fail " + base + "/user02/ -o /dev/null", timeout=60)
        assert '"nodes": [1]' in curl("user02", "/user02/api/userdata/workflows%2Fkeep.json"), "user02's file is gone"
        q = curl("user02", "/user02/queue")
        h = curl("user02", f"/user02/history/{mine}", check=False)
        assert mine in q or mine in h, f"user02's job vanished: queue {q}, history {h}"
        wait_for("user02's job finished", lambda: "vmtest_" in curl("user02", f"/user02/history/{mine}", check=False), 900)

    with subtest("systemctl controls one participant"):
        machine.succeed("systemctl stop comfy-multi-frontend@user02.service")
        assert code("/user02/") == "502", code("/user02/")
        machine.succeed("curl -sS --fail " + base + "/user01/ -o /dev/null")
        machine.succeed("systemctl start comfy-multi-frontend@user02.service")
        machine.wait_until_succeeds("curl -sS --fail " + base + "/user02/ -o /dev/null", timeout=60)
  '';
}
