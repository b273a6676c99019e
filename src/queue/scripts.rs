//! The Lua scripts, one per atomic queue operation, each with the shared
//! prelude prepended. Loaded once; invoked by SHA (redis-rs falls back to
//! `EVAL` when the server has not seen the script yet, e.g. after a restart).

use redis::Script;
use std::sync::LazyLock;

const PRELUDE: &str = include_str!("lua/prelude.lua");

macro_rules! scripts {
    ($($name:ident => $file:literal),* $(,)?) => {
        /// All queue scripts.
        pub struct Scripts { $(pub $name: Script,)* }

        impl Scripts {
            fn load() -> Self {
                Self { $($name: Script::new(&format!("{PRELUDE}\n{}", include_str!(concat!("lua/", $file)))),)* }
            }
        }
    };
}

scripts! {
    enqueue => "enqueue.lua",
    lease => "lease.lua",
    start => "start.lua",
    heartbeat => "heartbeat.lua",
    finish => "finish.lua",
    requeue_expired => "requeue_expired.lua",
    cancel => "cancel.lua",
    prioritize => "prioritize.lua",
    move_job => "move.lua",
    set_mode => "set_mode.lua",
    set_affinity => "set_affinity.lua",
    report_warm => "report_warm.lua",
    set_pool => "set_pool.lua",
    pause => "pause.lua",
    set_participant => "set_participant.lua",
    clear_queue => "clear_queue.lua",
    delete_history => "delete_history.lua",
    register_caps => "register_caps.lua",
    release => "release.lua",
    broadcast => "broadcast.lua",
    set_draining => "set_draining.lua",
    set_login => "set_login.lua",
    note_output => "note_output.lua",
}

/// The process-wide script set.
pub fn scripts() -> &'static Scripts {
    static SCRIPTS: LazyLock<Scripts> = LazyLock::new(Scripts::load);
    &SCRIPTS
}
