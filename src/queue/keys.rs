//! Every Redis key and channel name the queue uses, in one place.
//!
//! All names share a configurable prefix so that several deployments (or
//! test cases) can share one Redis. The Lua scripts receive [`Keys::common`]
//! as their `KEYS` and derive per-job/per-participant names from the prefix
//! with the same layout as the functions below (see `lua/prelude.lua`).

/// Key names under one prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn global(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn scoped(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.prefix)
    }

    /// The `KEYS` every script receives, in the order `prelude.lua` names them.
    pub fn common(&self) -> [String; 8] {
        [
            self.settings(),
            self.queued(),
            self.prio(),
            self.rr(),
            self.fs(),
            self.leases(),
            self.stats(),
            self.users(),
        ]
    }

    /// Hash: mode, pause flags, counters, virtual time, global max pending.
    pub fn settings(&self) -> String {
        self.global("settings")
    }
    /// Zset: queued jobs outside the priority lane, by global order.
    pub fn queued(&self) -> String {
        self.global("queued")
    }
    /// Zset: the priority lane.
    pub fn prio(&self) -> String {
        self.global("prio")
    }
    /// Zset: participants with waiting work, by round-robin turn.
    pub fn rr(&self) -> String {
        self.global("rr")
    }
    /// Zset: participants with waiting work, by fair-share start tag.
    pub fn fs(&self) -> String {
        self.global("fs")
    }
    /// Zset: leased and running jobs, by lease deadline.
    pub fn leases(&self) -> String {
        self.global("leases")
    }
    /// Hash: lifetime counters (enqueued, succeeded, failed, …).
    pub fn stats(&self) -> String {
        self.global("stats")
    }
    /// Set: every participant seen.
    pub fn users(&self) -> String {
        self.global("users")
    }
    /// List: recent run times (ms) of all participants.
    pub fn run_times(&self) -> String {
        self.global("rt")
    }
    /// Hash: one job.
    pub fn job(&self, id: &str) -> String {
        self.scoped("job", id)
    }
    /// Hash: one participant's settings and counters.
    pub fn user(&self, participant: &str) -> String {
        self.scoped("user", participant)
    }
    /// Zset: one participant's waiting jobs, in their order.
    pub fn line(&self, participant: &str) -> String {
        self.scoped("line", participant)
    }
    /// Set: one participant's leased and running jobs.
    pub fn inflight(&self, participant: &str) -> String {
        self.scoped("inflight", participant)
    }
    /// List: one participant's finished jobs, newest first.
    pub fn history(&self, participant: &str) -> String {
        self.scoped("hist", participant)
    }
    /// List: one participant's recent run times (ms).
    pub fn user_run_times(&self, participant: &str) -> String {
        self.scoped("rt", participant)
    }
    /// Set: capability tags a worker advertised.
    pub fn caps(&self, worker: &str) -> String {
        self.scoped("caps", worker)
    }
    /// String (expiring): the storage watch's level, `ok`, `warn` or
    /// `refuse` (enqueue.lua refuses at `refuse`).
    pub fn storage_level(&self) -> String {
        self.global("storage_level")
    }
    /// String (expiring): the storage watch's last report (JSON).
    pub fn storage(&self) -> String {
        self.global("storage")
    }
    /// Set: the model-file tags a worker holds warm (lease.lua, report_warm.lua).
    pub fn warm(&self, worker: &str) -> String {
        self.scoped("warm", worker)
    }
    /// Hash: worker → the fencing token its warm set is about (lease.lua's
    /// prediction or the agent's report, whichever is newer).
    pub fn warm_tokens(&self) -> String {
        self.global("warmtok")
    }
    /// Hash: one worker pool's `state`, `burst` policy and `gpu_ms` used.
    pub fn pool(&self, name: &str) -> String {
        self.scoped("pool", name)
    }
    /// Hash: worker → the pool it belongs to.
    pub fn worker_pools(&self) -> String {
        self.global("workerpool")
    }
    /// String: a worker's ComfyUI `object_info`, stored once per digest.
    pub fn object_info(&self, digest: &str) -> String {
        self.scoped("objinfo", digest)
    }
    /// Hash: workers seen (id → JSON: catalogue digest, model inputs, when
    /// last seen), kept after they disconnect; their `caps` sets likewise.
    pub fn known(&self) -> String {
        self.global("known")
    }
    /// Sorted set: workers by when they were last seen (registered or
    /// disconnected, ms): a disconnected worker still counts for what jobs
    /// the workshop can run while it is recent.
    pub fn seen(&self) -> String {
        self.global("seen")
    }
    /// Hash: connected workers (id → JSON description), kept by the hub.
    pub fn workers(&self) -> String {
        self.global("workers")
    }
    /// Sorted set: open editor sockets (`participant\nsession` → expiry ms).
    pub fn online(&self) -> String {
        self.global("online")
    }
    /// Hash: a participant's reset login (password, token).
    pub fn login(&self, participant: &str) -> String {
        self.scoped("login", participant)
    }
    /// Set: workers being drained (no new leases).
    pub fn draining(&self) -> String {
        self.global("draining")
    }
    /// Pub/sub channel of one participant's job changes.
    pub fn participant_channel(&self, participant: &str) -> String {
        self.scoped("ev", participant)
    }
    /// Pub/sub channel of settings changes (mode, pause, participants).
    pub fn admin_channel(&self) -> String {
        self.scoped("ev", "@admin")
    }
    /// Pub/sub channel of messages for every participant (broadcasts).
    pub fn all_participants_channel(&self) -> String {
        self.scoped("ev", "@all")
    }
    /// Pattern matching every channel above, for the admin page.
    pub fn all_channels_pattern(&self) -> String {
        let mut escaped = String::new();
        for c in self.prefix.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        format!("{escaped}:ev:*")
    }
}
