//! A ComfyUI at a URL as a backend: the host's own GPUs (`comfy-multi
//! worker`, `[[workers]]`) and `comfyui_url` pools (a rented pod's proxy
//! URL, a ComfyUI served on Modal), with optional request headers.

use super::backend::{Backend, JobIo};
use super::comfyui::ComfyClient;
use super::events::Dispatcher;
use super::run::{self, JobCtx};
use crate::protocol::WorkerMsg;
use crate::queue::Lease;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// One ComfyUI and the socket that carries its events.
pub struct ComfyBackend {
    comfy: Arc<ComfyClient>,
    events: Dispatcher,
}

impl ComfyBackend {
    pub fn new(url: &str, client_name: &str, headers: &[(String, String)]) -> anyhow::Result<Self> {
        Ok(Self {
            comfy: Arc::new(ComfyClient::with_headers(url, client_name, headers)?),
            events: Dispatcher::default(),
        })
    }
}

impl Backend for ComfyBackend {
    fn address(&self) -> String {
        self.comfy.base_url().to_string()
    }

    async fn probe(&self) -> Result<(Value, Value), String> {
        let info = self.catalogue().await?;
        let stats = self.comfy.system_stats().await.unwrap_or_default();
        Ok((info, stats))
    }

    async fn catalogue(&self) -> Result<Value, String> {
        self.comfy.object_info().await.map_err(|e| e.to_string())
    }

    async fn model_files(&self) -> Option<HashSet<String>> {
        self.comfy.model_files().await
    }

    fn start(self: &Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(self.events.clone().run(self.comfy.clone(), shutdown));
    }

    fn health(&self) -> (bool, String) {
        if self.events.is_connected() {
            // Nothing to show while it answers.
            (true, String::new())
        } else {
            (false, "ComfyUI is unreachable".into())
        }
    }

    async fn run(self: Arc<Self>, io: JobIo, lease: Lease, cancel: CancellationToken) -> WorkerMsg {
        let ctx = JobCtx {
            comfy: self.comfy.clone(),
            events: self.events.clone(),
            io,
        };
        run::run(&ctx, lease, cancel).await
    }

    async fn warmup(self: Arc<Self>, id: String, prompt: Value) -> WorkerMsg {
        super::warmup::run(&self.comfy, id, prompt).await
    }
}
