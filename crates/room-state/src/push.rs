//! SimplePush: an HTTP `PUT` with the form body `version=<unix seconds>` to every `rooms` URL of the room
//! owner's devices (loop-server `simplepush.js`), fire-and-forget: the answer is counted, never awaited by
//! the request that caused it.

use std::time::Duration;

use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::store::Store;

/// Sends the notifications.
#[derive(Clone, Debug)]
pub struct Notifier {
    client: Option<reqwest::Client>,
    store: Store,
    tasks: TaskTracker,
}

impl Notifier {
    /// A notifier with its own HTTP client (redirects not followed, `timeout` per request).
    pub fn new(store: Store, tasks: TaskTracker, timeout: Duration) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .user_agent(concat!("rtcplane-rooms/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| tracing::error!(error = %e, "rooms: no SimplePush client; notifications are off"))
            .ok();
        Self {
            client,
            store,
            tasks,
        }
    }

    /// Notifies every device of `owner_hash` with `version`, in the background.
    pub fn notify(&self, owner_hash: &str, version: i64, reason: &'static str) {
        let Some(client) = self.client.clone() else {
            return;
        };
        let store = self.store.clone();
        let owner = owner_hash.to_owned();
        self.tasks.spawn(async move {
            let urls = match store.push_urls(&owner).await {
                Ok(u) => u,
                Err(e) => {
                    tracing::warn!(error = %e, "rooms: reading SimplePush URLs");
                    return;
                }
            };
            let body = format!("version={version}");
            let sends = urls.into_iter().map(|url| {
                let client = client.clone();
                let body = body.clone();
                async move {
                    let ok = client
                        .put(&url)
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(body)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    let result = if ok { "success" } else { "failure" };
                    ::metrics::counter!(metrics::PUSHES, "reason" => reason, "result" => result)
                        .increment(1);
                }
            });
            futures_util::future::join_all(sends).await;
        });
    }
}
