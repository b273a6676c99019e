//! The participant's files through the frontend, as the ComfyUI app and
//! script clients use them: `/upload/image`, `/upload/mask`, `/view` (with
//! Range requests), `/internal/files/*`, `LoadImage` lists in
//! `/object_info` and the model lists (`/models…`).
//!
//! Why this exists: uploads take names and paths from the client, so they
//! must land inside the participant's own folder, never overwrite another
//! file by accident, name collisions the way ComfyUI does (checked against
//! a real ComfyUI too), and stay invisible to every other participant.

mod support;
mod support_comfyui;

use comfy_multi::frontend::{run, FrontendState};
use comfy_multi::queue::{Queue, QueueSettings};
use reqwest::multipart::{Form, Part};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use support::RedisServer;
use tokio_util::sync::CancellationToken;

const LIMIT: u64 = 1 << 20;

struct Setup {
    _redis: RedisServer,
    queue: Queue,
    /// user07's base URL, e.g. `http://127.0.0.1:4000/user07`.
    mine: String,
    /// user08's, on the same state dir.
    theirs: String,
    state: tempfile::TempDir,
    http: reqwest::Client,
}

impl Setup {
    fn users(&self) -> PathBuf {
        self.state.path().join("users")
    }
}

async fn setup() -> Setup {
    let redis = RedisServer::start();
    let queue = Queue::connect(
        &redis.url(),
        &support::unique_prefix(),
        QueueSettings::default(),
    )
    .await
    .unwrap();
    support::store_catalogue(&queue).await;
    let state = tempfile::tempdir().unwrap();
    let mut urls = vec![];
    for u in ["user07", "user08"] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        urls.push(format!("http://{}/{u}", listener.local_addr().unwrap()));
        let fs = FrontendState::new(
            u,
            queue.clone(),
            state.path().join("static"),
            state.path().join("users").join(u),
            LIMIT,
        );
        tokio::spawn(run(listener, fs, CancellationToken::new()));
    }
    let theirs = urls.pop().unwrap();
    let mine = urls.pop().unwrap();
    Setup {
        _redis: redis,
        queue,
        mine,
        theirs,
        state,
        http: reqwest::Client::new(),
    }
}

/// A `w`×`h` RGBA PNG whose pixels depend on `seed`, with PNG text chunks.
fn png(w: u32, h: u32, seed: u8, texts: &[(&str, &str)]) -> Vec<u8> {
    let mut out = vec![];
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    for (k, v) in texts {
        enc.add_text_chunk(k.to_string(), v.to_string()).unwrap();
    }
    let mut writer = enc.write_header().unwrap();
    let data: Vec<u8> = (0..w * h * 4)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

fn form(name: &str, bytes: &[u8], fields: &[(&str, &str)]) -> Form {
    let mut f = Form::new().part(
        "image",
        Part::bytes(bytes.to_vec())
            .file_name(name.to_string())
            .mime_str("image/png")
            .unwrap(),
    );
    for (k, v) in fields {
        f = f.text(k.to_string(), v.to_string());
    }
    f
}

/// `POST {base}/upload/image`; status and body (JSON or text).
async fn upload(
    http: &reqwest::Client,
    base: &str,
    name: &str,
    bytes: &[u8],
    fields: &[(&str, &str)],
) -> (u16, Value) {
    let r = http
        .post(format!("{base}/upload/image"))
        .multipart(form(name, bytes, fields))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn view(http: &reqwest::Client, base: &str, query: &[(&str, &str)]) -> reqwest::Response {
    http.get(format!("{base}/view"))
        .query(query)
        .send()
        .await
        .unwrap()
}

async fn get_json(http: &reqwest::Client, url: impl reqwest::IntoUrl) -> (u16, Value) {
    let r = http.get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Every regular file under `dir`, relative.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e.path().strip_prefix(dir).unwrap().to_path_buf();
                out.push(rel.to_string_lossy().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn an_uploaded_image_is_served_back_by_view_with_the_same_bytes() {
    let t = setup().await;
    let bytes = png(4, 3, 1, &[]);
    let (status, body) = upload(&t.http, &t.mine, "cat.png", &bytes, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "cat.png", "subfolder": "", "type": "input"})
    );
    let r = view(
        &t.http,
        &t.mine,
        &[
            ("filename", "cat.png"),
            ("type", "input"),
            ("subfolder", ""),
        ],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.headers()["content-disposition"], "filename=\"cat.png\"");
    assert_eq!(r.bytes().await.unwrap(), bytes);
    // The app's form: `/api/view`, the folder named in the file name.
    let r = view(
        &t.http,
        &format!("{}/api", t.mine),
        &[("filename", "cat.png [input]")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), bytes);
    // Without a type, /view looks in output/.
    let r = view(&t.http, &t.mine, &[("filename", "cat.png")]).await;
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn uploading_the_same_bytes_twice_reuses_the_name() {
    let t = setup().await;
    let bytes = png(4, 3, 2, &[]);
    for _ in 0..2 {
        let (status, body) = upload(&t.http, &t.mine, "same.png", &bytes, &[]).await;
        assert_eq!(status, 200);
        assert_eq!(body["name"], "same.png");
    }
    assert_eq!(files_under(&t.users().join("user07/input")), ["same.png"]);
}

#[tokio::test]
async fn different_bytes_under_a_taken_name_get_numbered_names() {
    let t = setup().await;
    let mut names = vec![];
    for seed in [1, 2, 3, 2] {
        let (_, body) = upload(&t.http, &t.mine, "pic.png", &png(4, 3, seed, &[]), &[]).await;
        names.push(body["name"].as_str().unwrap().to_string());
    }
    // The fourth has the bytes of `pic (1).png`, so it is that file.
    assert_eq!(
        names,
        ["pic.png", "pic (1).png", "pic (2).png", "pic (1).png"]
    );
    let (_, body) = upload(&t.http, &t.mine, "noext", b"x", &[]).await;
    assert_eq!(body["name"], "noext");
    let (_, body) = upload(&t.http, &t.mine, "noext", b"y", &[]).await;
    assert_eq!(body["name"], "noext (1)");
}

#[tokio::test]
async fn overwrite_true_replaces_the_file_under_its_name() {
    let t = setup().await;
    let (first, second) = (png(4, 3, 1, &[]), png(4, 3, 9, &[]));
    upload(&t.http, &t.mine, "o.png", &first, &[]).await;
    for flag in ["true", "1"] {
        let (status, body) =
            upload(&t.http, &t.mine, "o.png", &second, &[("overwrite", flag)]).await;
        assert_eq!(status, 200);
        assert_eq!(body["name"], "o.png");
    }
    let r = view(
        &t.http,
        &t.mine,
        &[("filename", "o.png"), ("type", "input")],
    )
    .await;
    assert_eq!(r.bytes().await.unwrap(), second);
    assert_eq!(files_under(&t.users().join("user07/input")), ["o.png"]);
    // Any other value does not overwrite.
    let (_, body) = upload(&t.http, &t.mine, "o.png", &first, &[("overwrite", "yes")]).await;
    assert_eq!(body["name"], "o (1).png");
}

#[tokio::test]
async fn subfolder_and_type_are_honoured() {
    let t = setup().await;
    let bytes = png(4, 3, 5, &[]);
    let (status, body) = upload(
        &t.http,
        &t.mine,
        "p.png",
        &bytes,
        &[("subfolder", "pasted/deep"), ("type", "temp")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"name": "p.png", "subfolder": "pasted/deep", "type": "temp"})
    );
    assert!(t.users().join("user07/temp/pasted/deep/p.png").is_file());
    let r = view(
        &t.http,
        &t.mine,
        &[
            ("filename", "p.png"),
            ("subfolder", "pasted/deep"),
            ("type", "temp"),
        ],
    )
    .await;
    assert_eq!(r.bytes().await.unwrap(), bytes);
    let (status, _) = upload(&t.http, &t.mine, "p.png", &bytes, &[("type", "models")]).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_with_413_and_nothing_is_written() {
    let t = setup().await;
    let big = vec![7u8; LIMIT as usize + 1];
    let (status, body) = upload(&t.http, &t.mine, "big.png", &big, &[]).await;
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upload limit"),
        "{body}"
    );
    assert_eq!(files_under(&t.users()), Vec::<String>::new());
    // Exactly the limit is fine.
    let (status, _) = upload(&t.http, &t.mine, "big.png", &big[1..], &[]).await;
    assert_eq!(status, 200);
    assert_eq!(files_under(&t.users()), ["user07/input/big.png"]);
}

#[tokio::test]
async fn traversal_names_are_refused_and_nothing_is_written_anywhere() {
    let t = setup().await;
    let bytes = png(2, 2, 1, &[]);
    for (name, fields) in [
        ("../x.png", vec![]),
        ("a/../../x.png", vec![]),
        ("/tmp/abs.png", vec![]),
        ("..", vec![]),
        (".hidden.png", vec![]),
        ("x.png", vec![("subfolder", "../../user08")]),
        ("x.png", vec![("subfolder", "../user08/input")]),
        ("x.png", vec![("subfolder", "/tmp")]),
        ("x.png", vec![("subfolder", "a/../../..")]),
        ("x.png", vec![("type", "../user08")]),
    ] {
        let (status, body) = upload(&t.http, &t.mine, name, &bytes, &fields).await;
        assert_eq!(status, 400, "{name} {fields:?}: {body}");
    }
    assert_eq!(files_under(t.state.path()), Vec::<String>::new());
    assert!(!Path::new("/tmp/abs.png").exists());

    // Nor can /view read outside the participant's folders.
    std::fs::create_dir_all(t.users().join("user08/input")).unwrap();
    std::fs::write(t.users().join("user08/input/theirs.png"), b"theirs").unwrap();
    for q in [
        vec![
            ("filename", "../user08/input/theirs.png"),
            ("type", "input"),
        ],
        vec![
            ("filename", "theirs.png"),
            ("subfolder", "../../user08/input"),
            ("type", "input"),
        ],
        vec![("filename", "theirs.png"), ("type", "../user08/input")],
        vec![("filename", "/etc/passwd")],
    ] {
        let r = view(&t.http, &t.mine, &q).await;
        assert!(
            [400, 404].contains(&r.status().as_u16()),
            "{q:?}: {}",
            r.status()
        );
    }
}

#[tokio::test]
async fn a_malformed_body_or_a_form_without_an_image_file_is_a_400() {
    let t = setup().await;
    let url = format!("{}/upload/image", t.mine);
    let garbage = t
        .http
        .post(&url)
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("this is not a multipart body")
        .send()
        .await
        .unwrap();
    assert_eq!(garbage.status(), 400);
    let not_multipart = t
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(not_multipart.status(), 400);
    let no_image = t
        .http
        .post(&url)
        .multipart(Form::new().text("type", "input"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_image.status(), 400);
    let image_as_text = t
        .http
        .post(&url)
        .multipart(Form::new().text("image", "x.png"))
        .send()
        .await
        .unwrap();
    assert_eq!(image_as_text.status(), 400);
    let (status, _) = upload(&t.http, &t.mine, "", b"x", &[]).await;
    assert_eq!(status, 400);
    assert_eq!(files_under(t.state.path()), Vec::<String>::new());
}

#[tokio::test]
async fn a_range_request_on_view_gets_206_with_those_bytes() {
    let t = setup().await;
    let bytes: Vec<u8> = (0..100u8).collect();
    upload(&t.http, &t.mine, "clip.webm", &bytes, &[]).await;
    let q = [("filename", "clip.webm"), ("type", "input")];
    let r = t
        .http
        .get(format!("{}/view", t.mine))
        .query(&q)
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 10-19/100");
    assert_eq!(r.headers()["content-type"], "video/webm");
    assert_eq!(r.bytes().await.unwrap(), bytes[10..20]);
    let head = t
        .http
        .head(format!("{}/view", t.mine))
        .query(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], "100");
    assert_eq!(head.headers()["accept-ranges"], "bytes");
}

#[tokio::test]
async fn another_participant_cannot_view_or_list_my_upload() {
    let t = setup().await;
    let bytes = png(4, 3, 3, &[]);
    upload(&t.http, &t.mine, "mine.png", &bytes, &[]).await;
    let q = [("filename", "mine.png"), ("type", "input")];
    assert_eq!(view(&t.http, &t.mine, &q).await.status(), 200);
    assert_eq!(view(&t.http, &t.theirs, &q).await.status(), 404);
    let (_, mine) = get_json(&t.http, &format!("{}/internal/files/input", t.mine)).await;
    let (_, theirs) = get_json(&t.http, &format!("{}/internal/files/input", t.theirs)).await;
    assert_eq!(mine, json!(["mine.png"]));
    assert_eq!(theirs, json!([]));
}

fn load_image_list(info: &Value, class: &str) -> Value {
    info[class]["input"]["required"]["image"][0].clone()
}

#[tokio::test]
async fn load_image_lists_show_each_participants_own_uploads_only() {
    let t = setup().await;
    upload(&t.http, &t.mine, "cat.png", &png(4, 3, 1, &[]), &[]).await;
    upload(
        &t.http,
        &t.mine,
        "dog.png",
        &png(4, 3, 2, &[]),
        &[("subfolder", "pasted")],
    )
    .await;
    upload(&t.http, &t.mine, "notes.txt", b"not an image", &[]).await;
    upload(
        &t.http,
        &t.mine,
        "out.png",
        &png(4, 3, 3, &[]),
        &[("type", "output")],
    )
    .await;
    let (status, info) = get_json(&t.http, &format!("{}/api/object_info", t.mine)).await;
    assert_eq!(status, 200);
    // The worker's own input file (noise256.png) is gone too.
    for class in ["LoadImage", "LoadImageMask"] {
        assert_eq!(
            load_image_list(&info, class),
            json!(["cat.png", "pasted/dog.png"]),
            "{class}"
        );
    }
    // The new-format LoadImageOutput has no list: the app asks
    // /internal/files/output.
    assert_eq!(load_image_list(&info, "LoadImageOutput"), "COMBO");
    assert!(info["LoadImageOutput"]["input"]["required"]["image"][1]
        .get("options")
        .is_none());
    // Other combos are untouched.
    assert_eq!(
        info["VAELoader"]["input"]["required"]["vae_name"][0],
        json!(["pixel_space"])
    );
    let (_, info) = get_json(&t.http, &format!("{}/api/object_info", t.theirs)).await;
    assert_eq!(load_image_list(&info, "LoadImage"), json!([]));
}

#[tokio::test]
async fn internal_files_lists_own_top_level_files_newest_first() {
    let t = setup().await;
    for (name, seed) in [("old.png", 1), ("new.png", 2)] {
        upload(
            &t.http,
            &t.mine,
            name,
            &png(2, 2, seed, &[]),
            &[("type", "output")],
        )
        .await;
    }
    upload(
        &t.http,
        &t.mine,
        "deep.png",
        &png(2, 2, 3, &[]),
        &[("type", "output"), ("subfolder", "s")],
    )
    .await;
    let out = t.users().join("user07/output");
    let set = |name: &str, secs: u64| {
        let f = std::fs::File::options()
            .write(true)
            .open(out.join(name))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
            .unwrap();
    };
    set("old.png", 1_000_000);
    set("new.png", 2_000_000);
    let (status, files) = get_json(&t.http, &format!("{}/internal/files/output", t.mine)).await;
    assert_eq!(status, 200);
    assert_eq!(files, json!(["new.png", "old.png"]));
    let (_, files) = get_json(&t.http, &format!("{}/internal/files/temp", t.mine)).await;
    assert_eq!(files, json!([]));
    let (status, body) = get_json(&t.http, &format!("{}/internal/files/models", t.mine)).await;
    assert_eq!(status, 400);
    assert_eq!(body, json!({"error": "Invalid directory type"}));
}

#[tokio::test]
async fn upload_mask_pastes_the_masks_alpha_into_the_original() {
    let t = setup().await;
    let original = png(4, 3, 10, &[("workflow", "{\"nodes\": []}")]);
    let (status, _) = upload(
        &t.http,
        &t.mine,
        "orig.png",
        &original,
        &[("type", "output")],
    )
    .await;
    assert_eq!(status, 200);
    let mask = png(4, 3, 99, &[]);
    let r = t
        .http
        .post(format!("{}/api/upload/mask", t.mine))
        .multipart(form(
            "mask.png",
            &mask,
            &[
                ("type", "input"),
                ("subfolder", "clipspace"),
                (
                    "original_ref",
                    r#"{"filename": "orig.png", "subfolder": "", "type": "output"}"#,
                ),
            ],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"name": "mask.png", "subfolder": "clipspace", "type": "input"})
    );
    let r = view(
        &t.http,
        &t.mine,
        &[
            ("filename", "mask.png"),
            ("subfolder", "clipspace"),
            ("type", "input"),
        ],
    )
    .await;
    let stored = r.bytes().await.unwrap();
    let got = image::load_from_memory(&stored).unwrap().into_rgba8();
    let orig = image::load_from_memory(&original).unwrap().into_rgba8();
    let mask = image::load_from_memory(&mask).unwrap().into_rgba8();
    for (x, y, p) in got.enumerate_pixels() {
        let (o, m) = (orig.get_pixel(x, y), mask.get_pixel(x, y));
        assert_eq!(p.0[..3], o.0[..3], "colour at {x},{y}");
        assert_eq!(p.0[3], m.0[3], "alpha at {x},{y}");
    }
    assert_ne!(got.get_pixel(1, 1).0[3], orig.get_pixel(1, 1).0[3]);
    // The original's PNG text (the workflow) is kept.
    let reader = png::Decoder::new(std::io::Cursor::new(stored.to_vec()))
        .read_info()
        .unwrap();
    let texts: Vec<(String, String)> = reader
        .info()
        .uncompressed_latin1_text
        .iter()
        .map(|c| (c.keyword.clone(), c.text.clone()))
        .collect();
    assert_eq!(
        texts,
        [("workflow".to_string(), "{\"nodes\": []}".to_string())]
    );
}

#[tokio::test]
async fn upload_mask_without_its_original_is_a_clear_400_and_stores_nothing() {
    let t = setup().await;
    for original_ref in [
        r#"{"filename": "missing.png"}"#,
        r#"{"filename": "../user08/output/x.png"}"#,
        "not json",
    ] {
        let r = t
            .http
            .post(format!("{}/upload/mask", t.mine))
            .multipart(form(
                "m.png",
                &png(2, 2, 1, &[]),
                &[("original_ref", original_ref)],
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{original_ref}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"]["message"].is_string(), "{body}");
    }
    assert_eq!(files_under(t.state.path()), Vec::<String>::new());
}

#[tokio::test]
async fn models_lists_the_folders_and_the_workers_model_files() {
    let t = setup().await;
    // The recorded catalogue has no models; give the worker a few.
    let mut info: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/comfyui-0.3.64/object_info.json"
        ))
        .unwrap(),
    )
    .unwrap();
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] =
        json!(["sd15.safetensors", "sdxl.safetensors"]);
    info["LoraLoader"]["input"]["required"]["lora_name"][0] = json!(["style.safetensors"]);
    info["UpscaleModelLoader"]["input"]["required"]["model_name"][1]["options"] = json!(["4x.pth"]);
    t.queue
        .put_object_info("d-models", &info.to_string())
        .await
        .unwrap();
    let worker = json!({"id": "gpu0", "object_info_digest": "d-models"});
    t.queue
        .set_worker("gpu0", Some(&worker.to_string()))
        .await
        .unwrap();

    let (status, folders) = get_json(&t.http, &format!("{}/api/models", t.mine)).await;
    assert_eq!(status, 200);
    for f in ["checkpoints", "loras", "vae", "text_encoders", "embeddings"] {
        assert!(folders.as_array().unwrap().contains(&json!(f)), "{f}");
    }
    let get = |f: &str| get_json(&t.http, format!("{}/models/{f}", t.mine));
    assert_eq!(
        get("checkpoints").await,
        (200, json!(["sd15.safetensors", "sdxl.safetensors"]))
    );
    assert_eq!(get("loras").await, (200, json!(["style.safetensors"])));
    assert_eq!(get("upscale_models").await, (200, json!(["4x.pth"])));
    assert_eq!(get("vae").await, (200, json!([])));
    assert_eq!(get("embeddings").await, (200, json!([])));
    assert_eq!(get("nope").await.0, 404);
    let r = t
        .http
        .get(format!("{}/view_metadata/checkpoints", t.mine))
        .query(&[("filename", "sd15.safetensors")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// Extra form fields of one upload.
type Fields<'a> = Vec<(&'a str, &'a str)>;

/// The vendored early-2024 ComfyUI predates ComfyUI's same-bytes check
/// (0.3.64 reuses the name; `uploading_the_same_bytes_twice_reuses_the_name`
/// covers that), so only uploads with different bytes are compared here.
#[tokio::test]
async fn upload_names_and_answers_match_a_real_comfyui() {
    let comfy = tokio::task::spawn_blocking(|| support_comfyui::ComfyUi::shared().url.clone())
        .await
        .unwrap();
    let t = setup().await;
    let stem = format!("cm-files-{}", uuid::Uuid::new_v4().simple());
    let name = format!("{stem}.png");
    let sub = format!("{stem}-sub");
    let steps: Vec<(&str, Vec<u8>, Fields)> = vec![
        (&name, png(2, 2, 1, &[]), vec![]),
        (&name, png(2, 2, 2, &[]), vec![]),
        (&name, png(2, 2, 3, &[]), vec![("type", "input")]),
        (&name, png(2, 2, 4, &[]), vec![("overwrite", "true")]),
        (&name, png(2, 2, 5, &[]), vec![("overwrite", "false")]),
        (&name, png(2, 2, 6, &[]), vec![("subfolder", &sub)]),
        (&name, png(2, 2, 7, &[]), vec![("subfolder", &sub)]),
        (&name, png(2, 2, 8, &[]), vec![("type", "temp")]),
        ("noext", png(2, 2, 9, &[]), vec![("subfolder", &sub)]),
        ("noext", png(2, 2, 10, &[]), vec![("subfolder", &sub)]),
        (&name, png(2, 2, 11, &[]), vec![("subfolder", "../..")]),
    ];
    for (n, bytes, fields) in &steps {
        let theirs = upload(&t.http, &comfy, n, bytes, fields).await;
        let ours = upload(&t.http, &t.mine, n, bytes, fields).await;
        assert_eq!(ours.0, theirs.0, "{n} {fields:?}: {theirs:?} vs {ours:?}");
        if theirs.0 == 200 {
            assert_eq!(ours.1, theirs.1, "{n} {fields:?}");
            // And the stored bytes are the uploaded ones on both.
            let q = [
                ("filename", theirs.1["name"].as_str().unwrap()),
                ("subfolder", theirs.1["subfolder"].as_str().unwrap()),
                ("type", theirs.1["type"].as_str().unwrap()),
            ];
            let a = view(&t.http, &comfy, &q).await.bytes().await.unwrap();
            let b = view(&t.http, &t.mine, &q).await.bytes().await.unwrap();
            assert_eq!((&a[..], &b[..]), (&bytes[..], &bytes[..]), "{q:?}");
        }
    }
}
