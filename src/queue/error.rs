//! Why a queue operation did not happen: a refusal the caller should show
//! (nothing was written), or a fault talking to Redis.

use std::fmt;

/// A refusal's kind; the scripts return these codes as strings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    PromptTooLarge,
    Paused,
    Locked,
    TooManyPending,
    DuplicateId,
    NotFound,
    StaleToken,
    AlreadyFinished,
    NotQueued,
    Invalid,
    /// No worker connected or seen recently has every node and model file
    /// the job needs.
    NotOnAnyWorker,
    /// The disks are nearly full: no new jobs until space is freed.
    StorageFull,
}

impl Refusal {
    fn from_code(code: &str) -> Option<Self> {
        Some(match code {
            "prompt_too_large" => Refusal::PromptTooLarge,
            "paused" => Refusal::Paused,
            "locked" => Refusal::Locked,
            "too_many_pending" => Refusal::TooManyPending,
            "duplicate_id" => Refusal::DuplicateId,
            "not_found" => Refusal::NotFound,
            "stale_token" => Refusal::StaleToken,
            "already_finished" => Refusal::AlreadyFinished,
            "not_queued" => Refusal::NotQueued,
            "invalid" => Refusal::Invalid,
            "not_on_any_worker" => Refusal::NotOnAnyWorker,
            "storage_full" => Refusal::StorageFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::PromptTooLarge => "prompt_too_large",
            Refusal::Paused => "paused",
            Refusal::Locked => "locked",
            Refusal::TooManyPending => "too_many_pending",
            Refusal::DuplicateId => "duplicate_id",
            Refusal::NotFound => "not_found",
            Refusal::StaleToken => "stale_token",
            Refusal::AlreadyFinished => "already_finished",
            Refusal::NotQueued => "not_queued",
            Refusal::Invalid => "invalid",
            Refusal::NotOnAnyWorker => "not_on_any_worker",
            Refusal::StorageFull => "storage_full",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The operation was refused and changed nothing.
    #[error("{message}")]
    Refused { refusal: Refusal, message: String },
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Redis held or returned something the queue cannot read.
    #[error("unexpected queue data: {0}")]
    Corrupt(String),
}

impl QueueError {
    pub fn refused(refusal: Refusal, message: impl Into<String>) -> Self {
        QueueError::Refused {
            refusal,
            message: message.into(),
        }
    }

    /// The refusal kind, if this is a refusal.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            QueueError::Refused { refusal, .. } => Some(*refusal),
            _ => None,
        }
    }

    /// Turns a script's `{"err", code, message}` reply into an error.
    pub(crate) fn from_reply(code: &str, message: &str) -> Self {
        match Refusal::from_code(code) {
            Some(refusal) => QueueError::refused(refusal, message),
            None => QueueError::Corrupt(format!("unknown refusal {code}: {message}")),
        }
    }
}
