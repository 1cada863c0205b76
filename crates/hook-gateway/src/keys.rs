//! Stream keys (`hooks_stream_keys`): a secret a publisher puts in its stream URL, mapped to the app and the
//! public stream name it may publish. Only the SHA-256 of a key is stored, so a leaked table leaks no key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rtcplane_storage::{Storage, with_pool};
use serde::Serialize;
use sha2::Digest;
use sqlx::Row;

/// What a key unlocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct StreamKey {
    /// App it may publish in.
    pub app: String,
    /// Public stream name.
    pub stream: String,
    /// Free text.
    pub description: String,
    /// Unix ms.
    pub created_at: i64,
    /// First 8 hex digits of the key's hash, to tell keys apart without revealing them.
    pub fingerprint: String,
}

/// The key store (absent in unit tests that need none).
#[derive(Clone, Debug)]
pub struct Keys {
    storage: Option<Storage>,
}

fn hash(key: &str) -> String {
    sha2::Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Keys {
    /// Keys in the main store.
    pub fn new(storage: Storage) -> Self {
        Self {
            storage: Some(storage),
        }
    }

    /// No store: every lookup finds nothing.
    pub fn disabled() -> Self {
        Self { storage: None }
    }

    /// What `key` unlocks, if anything.
    pub async fn lookup(&self, key: &str) -> Result<Option<StreamKey>, sqlx::Error> {
        let Some(s) = &self.storage else {
            return Ok(None);
        };
        if key.is_empty() || key.len() > 512 {
            return Ok(None);
        }
        let h = hash(key);
        let sql = s.sql(
            "SELECT key_hash, app, stream, description, created_at FROM hooks_stream_keys WHERE key_hash = ?",
        );
        with_pool!(s, p => {
            let row = sqlx::query(sql).bind(&h).fetch_optional(p).await?;
            row.map(|r| Ok(StreamKey {
                app: r.try_get("app")?,
                stream: r.try_get("stream")?,
                description: r.try_get("description")?,
                created_at: r.try_get("created_at")?,
                fingerprint: h[..8].to_owned(),
            })).transpose()
        })
    }

    /// Stores a key for `app/stream` (a random one when `key` is None) and returns it.
    pub async fn add(
        &self,
        app: &str,
        stream: &str,
        key: Option<String>,
        description: &str,
    ) -> Result<String, KeyError> {
        let Some(s) = &self.storage else {
            return Err(KeyError::Invalid("no key store".into()));
        };
        for (what, v) in [("app", app), ("stream", stream)] {
            if v.is_empty()
                || v.len() > 255
                || !v.chars().all(|c| c.is_ascii_graphic())
                || v.contains(['?', '&'])
            {
                return Err(KeyError::Invalid(format!(
                    "{what} {v:?} must be 1 to 255 printable ASCII characters without `?` or `&`"
                )));
            }
        }
        let key = match key {
            Some(k) if k.len() < 16 || k.len() > 512 || k.contains(['?', '&', '/', ' ']) => {
                return Err(KeyError::Invalid(
                    "a key must be 16 to 512 characters without `?`, `&`, `/` or spaces".into(),
                ));
            }
            Some(k) => k,
            None => URL_SAFE_NO_PAD.encode(rand::random::<[u8; 24]>()),
        };
        let sql = s.sql(
            "INSERT INTO hooks_stream_keys (key_hash, app, stream, description, created_at) VALUES (?, ?, ?, ?, ?)",
        );
        let now = chrono::Utc::now().timestamp_millis();
        let h = hash(&key);
        let done = with_pool!(s, p => sqlx::query(sql).bind(&h).bind(app).bind(stream).bind(description).bind(now)
            .execute(p).await.map(|_| ()));
        match done {
            Ok(()) => Ok(key),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(KeyError::Invalid("this key is already stored".into()))
            }
            Err(e) => Err(KeyError::Storage(e)),
        }
    }

    /// Deletes one key (by the key itself or its fingerprint), or every key of `app/stream`; returns how many.
    pub async fn delete(&self, selector: &str) -> Result<u64, KeyError> {
        let Some(s) = &self.storage else {
            return Ok(0);
        };
        if let Some((app, stream)) = selector.split_once('/') {
            let sql = s.sql("DELETE FROM hooks_stream_keys WHERE app = ? AND stream = ?");
            let n = with_pool!(s, p => sqlx::query(sql).bind(app).bind(stream).execute(p).await.map(|r| r.rows_affected()))?;
            if n > 0 {
                return Ok(n);
            }
        }
        let exact = s.sql("DELETE FROM hooks_stream_keys WHERE key_hash = ?");
        let n = with_pool!(s, p => sqlx::query(exact).bind(hash(selector)).execute(p).await.map(|r| r.rows_affected()))?;
        if n > 0 || selector.len() != 8 || !selector.chars().all(|c| c.is_ascii_hexdigit()) {
            return Ok(n);
        }
        let by_fingerprint = s.sql("DELETE FROM hooks_stream_keys WHERE key_hash LIKE ?");
        let pattern = format!("{}%", selector.to_ascii_lowercase());
        Ok(
            with_pool!(s, p => sqlx::query(by_fingerprint).bind(pattern).execute(p).await.map(|r| r.rows_affected()))?,
        )
    }

    /// Every key (fingerprints, not keys), by app and stream.
    pub async fn list(&self) -> Result<Vec<StreamKey>, KeyError> {
        let Some(s) = &self.storage else {
            return Ok(Vec::new());
        };
        let sql = s.sql(
            "SELECT key_hash, app, stream, description, created_at FROM hooks_stream_keys ORDER BY app, stream, created_at",
        );
        let rows = with_pool!(s, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter().map(|r| {
                let h: String = r.try_get("key_hash")?;
                Ok(StreamKey {
                    app: r.try_get("app")?,
                    stream: r.try_get("stream")?,
                    description: r.try_get("description")?,
                    created_at: r.try_get("created_at")?,
                    fingerprint: h.chars().take(8).collect(),
                })
            }).collect::<Result<Vec<_>, sqlx::Error>>()
        })?;
        Ok(rows)
    }
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error("stream key storage: {0}")]
    Storage(#[from] sqlx::Error),
}
