//! `comfy-multi worker`: the agent that drives one real ComfyUI for the hub
//! (also run inside the hub for `[[workers]]` entries).

pub mod agent;
pub mod comfyui;
mod events;
pub mod hub_client;
mod loaded;
pub mod prompt;
mod run;
mod warmup;

pub use agent::{run as run_agent, AgentConfig, Starting};
