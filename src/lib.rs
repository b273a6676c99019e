//! comfy-multi: run a hands-on ComfyUI workshop — every participant in the
//! real ComfyUI editor, a few GPUs shared fairly through one durable queue,
//! the instructor in control. See `docs/ARCHITECTURE.md` for the map.

pub mod admin_cli;
pub mod archive;
pub mod auth;
pub mod catalogue;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod frontend;
pub mod hub;
pub mod paths;
pub mod pool;
pub mod protocol;
pub mod queue;
pub mod shutdown;
pub mod systemd;
pub mod telemetry;
pub mod up;
pub mod worker;
