//! The instructor's pool switches: each pool of workers (the host's GPUs,
//! rented machines, remote ComfyUIs) with its state, burst policy, workers
//! and cost so far; enable, park or drain one, or change when it takes
//! jobs. Every change goes through one queue script, is persisted there
//! (it outlives a hub restart) and audited.

use super::{audit, session::who};
use crate::error::AppError;
use crate::hub::HubState;
use crate::pool::{Burst, PoolKind, PoolState};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

/// `GET /admin/api/pools`: every configured pool and every pool a worker
/// joined, with its workers, jobs running and cost so far.
pub async fn list(State(s): State<HubState>) -> Result<Json<Value>, AppError> {
    let names: Vec<String> = s.pools.iter().map(|p| p.name.clone()).collect();
    let pools = s.queue.pools(&names).await?;
    let connected = s.queue.workers().await?;
    let running = s.queue.snapshot(1).await?.running;
    let mut out = vec![];
    for p in pools {
        let cfg = s.pools.iter().find(|c| c.name == p.name);
        let price = crate::config::pool_price(&s.pools, &p.name);
        // A comfyui_url pool's workers are known before they ever connect:
        // one not connected yet is still starting (a cold URL).
        let mut members = p.workers.clone();
        if let Some(c) = cfg {
            for id in c.in_hub_worker_ids() {
                if !members.contains(&id) {
                    members.push(id);
                }
            }
        }
        members.sort();
        let reasons = s.starting.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let workers: Vec<Value> = members
            .iter()
            .map(|w| {
                let in_hub = cfg.is_some_and(|c| c.kind != PoolKind::Agent);
                match connected.get(w) {
                    Some(info) => {
                        let info: Value = serde_json::from_str(info).unwrap_or_default();
                        let state = if info["healthy"] == false {
                            "unhealthy"
                        } else {
                            "connected"
                        };
                        json!({"id": w, "state": state, "health": info["health"]})
                    }
                    // Why it is not connected yet: cold (5xx), refused (a
                    // wrong key: 401/403), unreachable.
                    None if in_hub => match reasons.get(w) {
                        Some(r) => json!({"id": w, "state": "starting", "error": r}),
                        None => json!({"id": w, "state": "starting"}),
                    },
                    None => json!({"id": w, "state": "disconnected"}),
                }
            })
            .collect();
        let busy = running
            .iter()
            .filter(|j| j.worker.as_ref().is_some_and(|w| members.contains(w)))
            .count();
        let gpu_hours = p.gpu_hours();
        let shown_state = if p.state == PoolState::Draining && busy == 0 {
            "drained"
        } else {
            p.state.as_str()
        };
        out.push(json!({
            "name": p.name,
            "kind": cfg.map(|c| c.kind).unwrap_or_default().as_str(),
            "configured": cfg.is_some(),
            "state": shown_state,
            "burst": p.burst.to_string(),
            "workers": workers,
            "connected": workers.iter().filter(|w| w["state"] != "starting" && w["state"] != "disconnected").count(),
            "busy": busy,
            "gpu_hours": gpu_hours,
            "price_per_gpu_hour": price,
            "max_concurrency": cfg.map(|c| c.max_concurrency).unwrap_or(0),
            "cost": gpu_hours * price,
        }));
    }
    Ok(Json(Value::Array(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    /// `enabled`/`enable`, `parked`/`park`, `draining`/`drain`.
    state: Option<String>,
    /// `always` or `line_over:N`.
    burst: Option<String>,
}

/// `POST /admin/api/pools/{name} {"state": "park"}` or `{"burst":
/// "line_over:20"}`: switch a pool.
pub async fn set(
    State(s): State<HubState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<Value>, AppError> {
    let b: SetBody = serde_json::from_slice(&bytes)
        .map_err(|e| AppError::BadRequest(format!("invalid JSON: {e}")))?;
    let state: Option<PoolState> = b
        .state
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(AppError::BadRequest)?;
    let burst: Option<Burst> = b
        .burst
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(AppError::BadRequest)?;
    if state.is_none() && burst.is_none() {
        return Err(AppError::BadRequest(
            "nothing to change: give \"state\" and/or \"burst\"".into(),
        ));
    }
    let known = s.pools.iter().any(|p| p.name == name)
        || s.queue.pools(&[]).await?.iter().any(|p| p.name == name);
    if !known {
        return Err(AppError::Queue(crate::queue::QueueError::from_reply(
            "not_found",
            &format!("no pool named {name:?}"),
        )));
    }
    let (now_state, now_burst) = s.queue.set_pool(&name, state, burst).await?;
    let mut what = vec![];
    if let Some(st) = state {
        what.push(st.as_str().to_string());
    }
    if let Some(bu) = burst {
        what.push(format!("burst {bu}"));
    }
    audit(
        &who(&headers),
        "pool",
        &format!("{name} {}", what.join(" ")),
    );
    s.work_available.notify_waiters();
    Ok(Json(json!({
        "ok": true, "action": "pool", "pool": name,
        "state": now_state.as_str(), "burst": now_burst.to_string(),
    })))
}
