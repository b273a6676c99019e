//! Routes the one ComfyUI WebSocket stream of an agent to the job that each
//! event belongs to (by prompt id; previews and old-protocol progress
//! without one go to the prompt currently executing). Events that arrive
//! before their job registered its prompt id are held briefly.

use super::comfyui::{ComfyClient, ComfyEvent};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Routes {
    jobs: HashMap<String, mpsc::UnboundedSender<ComfyEvent>>,
    early: HashMap<String, Vec<ComfyEvent>>,
    current: Option<String>,
}

/// The router shared by the agent's job tasks.
#[derive(Clone, Default)]
pub struct Dispatcher {
    routes: Arc<Mutex<Routes>>,
    /// Set while the ComfyUI socket is connected.
    connected: Arc<std::sync::atomic::AtomicBool>,
}

/// The prompt id an event names, if any.
fn prompt_of(e: &ComfyEvent) -> Option<&str> {
    match e {
        ComfyEvent::ExecutionStart { prompt_id }
        | ComfyEvent::ExecutionCached { prompt_id, .. }
        | ComfyEvent::ProgressState { prompt_id, .. }
        | ComfyEvent::Executed { prompt_id, .. }
        | ComfyEvent::ExecutionSuccess { prompt_id }
        | ComfyEvent::ExecutionError { prompt_id, .. }
        | ComfyEvent::ExecutionInterrupted { prompt_id, .. } => Some(prompt_id),
        ComfyEvent::Executing { prompt_id, .. } | ComfyEvent::Progress { prompt_id, .. } => {
            prompt_id.as_deref()
        }
        ComfyEvent::Preview { metadata, .. } => metadata
            .as_ref()
            .and_then(|m| m.get("prompt_id"))
            .and_then(|p| p.as_str()),
        _ => None,
    }
}

impl Dispatcher {
    /// Receives the events of `prompt_id` (including any that came early).
    pub fn route(&self, prompt_id: &str) -> mpsc::UnboundedReceiver<ComfyEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut r = self.routes.lock().unwrap();
        for e in r.early.remove(prompt_id).unwrap_or_default() {
            let _ = tx.send(e);
        }
        r.jobs.insert(prompt_id.to_string(), tx);
        rx
    }

    /// Also delivers events of `alias` (ComfyUI's own id for the prompt) to
    /// the route of `prompt_id`.
    pub fn alias(&self, prompt_id: &str, alias: &str) {
        if prompt_id == alias {
            return;
        }
        let mut r = self.routes.lock().unwrap();
        if let Some(tx) = r.jobs.get(prompt_id).cloned() {
            for e in r.early.remove(alias).unwrap_or_default() {
                let _ = tx.send(e);
            }
            r.jobs.insert(alias.to_string(), tx);
        }
    }

    pub fn unroute(&self, ids: &[&str]) {
        let mut r = self.routes.lock().unwrap();
        for id in ids {
            r.jobs.remove(*id);
            r.early.remove(*id);
        }
    }

    pub fn is_connected(&self) -> bool {
        self.connected.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn deliver(&self, e: ComfyEvent) {
        let mut r = self.routes.lock().unwrap();
        if let ComfyEvent::ExecutionStart { prompt_id } = &e {
            r.current = Some(prompt_id.clone());
        }
        let Some(pid) = prompt_of(&e)
            .map(str::to_string)
            .or_else(|| r.current.clone())
        else {
            return;
        };
        let end = matches!(
            &e,
            ComfyEvent::ExecutionSuccess { .. }
                | ComfyEvent::ExecutionError { .. }
                | ComfyEvent::ExecutionInterrupted { .. }
                | ComfyEvent::Executing { node: None, .. }
        );
        if end && r.current.as_deref() == Some(pid.as_str()) {
            r.current = None;
        }
        match r.jobs.get(&pid) {
            Some(tx) => {
                let _ = tx.send(e);
            }
            None => {
                let early = r.early.entry(pid).or_default();
                if early.len() < 1000 {
                    early.push(e);
                }
                if r.early.len() > 64 {
                    // Prompts nobody claims (not ours): forget the oldest.
                    if let Some(k) = r.early.keys().next().cloned() {
                        r.early.remove(&k);
                    }
                }
            }
        }
    }

    /// Keeps a ComfyUI socket open (reconnecting) until `shutdown`; every
    /// route is closed when the socket drops, so running jobs notice.
    pub async fn run(self, comfy: Arc<ComfyClient>, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(200);
        while !shutdown.is_cancelled() {
            match comfy.events().await {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(200);
                    self.connected
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                    loop {
                        let next = tokio::select! {
                            n = stream.next() => n,
                            _ = shutdown.cancelled() => None,
                        };
                        match next {
                            Some(Ok(e)) => self.deliver(e),
                            Some(Err(e)) => tracing::debug!("ComfyUI event: {e}"),
                            None => break,
                        }
                    }
                    self.connected
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                    let mut r = self.routes.lock().unwrap();
                    r.jobs.clear();
                    r.current = None;
                    if !shutdown.is_cancelled() {
                        tracing::warn!("lost the ComfyUI socket");
                    }
                }
                Err(e) => tracing::debug!("ComfyUI socket: {e}"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.cancelled() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
