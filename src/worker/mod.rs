//! `comfy-multi worker`: the agent that drives one real ComfyUI for the hub
//! (also run inside the hub for `[[workers]]` entries and pools: a ComfyUI
//! at a URL, a RunPod serverless endpoint).

pub mod agent;
pub mod backend;
mod comfy_backend;
pub mod comfyui;
mod events;
pub mod hub_client;
mod loaded;
pub mod prompt;
mod run;
pub mod runpod;
mod warmup;

pub use agent::{run as run_agent, run_with, AgentConfig, Starting};

/// A worker the hub runs itself, and what it drives.
pub enum InHub {
    /// A ComfyUI at `comfyui_url` (`[[workers]]`, `comfyui_url` pools).
    ComfyUi(AgentConfig),
    /// A RunPod serverless endpoint.
    RunPod(AgentConfig, runpod::Settings),
}

impl InHub {
    pub fn config_mut(&mut self) -> &mut AgentConfig {
        match self {
            InHub::ComfyUi(c) | InHub::RunPod(c, _) => c,
        }
    }

    /// Runs it until `shutdown`.
    pub async fn run(self, shutdown: tokio_util::sync::CancellationToken) -> anyhow::Result<()> {
        match self {
            InHub::ComfyUi(cfg) => run_agent(cfg, shutdown).await,
            InHub::RunPod(cfg, settings) => {
                let backend = std::sync::Arc::new(runpod::RunPodBackend::new(settings)?);
                run_with(cfg, backend, shutdown).await
            }
        }
    }
}
