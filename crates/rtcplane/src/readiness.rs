//! `/readyz`: every dependency and enabled subsystem checked concurrently, each bounded by a timeout, plus the
//! draining flag set when shutdown begins.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::{BoxFuture, join_all};
use serde::Serialize;
use utoipa::ToSchema;

/// A check: resolves to `Err(why)` when the thing is down.
pub(crate) type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// How long one check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The node's readiness: named probes and a draining flag.
#[derive(Clone)]
pub(crate) struct Readiness {
    draining: Arc<AtomicBool>,
    checks: Arc<Vec<(String, Probe)>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.checks.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Readiness")
            .field("checks", &names)
            .finish_non_exhaustive()
    }
}

/// The answer of `/readyz`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Report {
    /// `ready`, `unavailable` or `draining`.
    pub(crate) status: &'static str,
    #[serde(skip)]
    pub(crate) ready: bool,
    /// Names of the checks that failed.
    pub(crate) down: Vec<String>,
    /// Every check by name.
    pub(crate) checks: BTreeMap<String, CheckResult>,
}

/// One check's outcome.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CheckResult {
    pub(crate) ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Readiness {
    pub(crate) fn new(checks: Vec<(String, Probe)>) -> Self {
        Self {
            draining: Arc::new(AtomicBool::new(false)),
            checks: Arc::new(checks),
        }
    }

    /// From now on `/readyz` answers 503 `draining`, so load balancers stop sending new work.
    pub(crate) fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub(crate) async fn report(&self) -> Report {
        let results = join_all(self.checks.iter().map(|(name, probe)| {
            let fut = probe();
            async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
                    Ok(r) => r,
                    Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
                };
                (name.clone(), outcome)
            }
        }))
        .await;
        let mut checks = BTreeMap::new();
        let mut down = Vec::new();
        for (name, outcome) in results {
            if let Err(e) = &outcome {
                down.push(name.clone());
                tracing::debug!(check = %name, error = %e, "readiness check failed");
            }
            checks.insert(
                name,
                CheckResult {
                    ok: outcome.is_ok(),
                    error: outcome.err(),
                },
            );
        }
        let draining = self.draining.load(Ordering::Relaxed);
        let ready = down.is_empty() && !draining;
        Report {
            status: if draining {
                "draining"
            } else if ready {
                "ready"
            } else {
                "unavailable"
            },
            ready,
            down,
            checks,
        }
    }
}

/// Builds a probe from an async closure.
pub(crate) fn probe<F, Fut>(f: F) -> Probe
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_what_is_down_and_drains() {
        let r = Readiness::new(vec![
            ("storage".into(), probe(|| async { Ok(()) })),
            (
                "redis".into(),
                probe(|| async { Err("connection refused".into()) }),
            ),
        ]);
        let rep = r.report().await;
        assert!(!rep.ready);
        assert_eq!(rep.status, "unavailable");
        assert_eq!(rep.down, vec!["redis".to_owned()]);
        assert_eq!(
            rep.checks["redis"].error.as_deref(),
            Some("connection refused")
        );

        let ok = Readiness::new(vec![("storage".into(), probe(|| async { Ok(()) }))]);
        assert!(ok.report().await.ready);
        ok.start_draining();
        let rep = ok.report().await;
        assert!(!rep.ready);
        assert_eq!(rep.status, "draining");
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_counts_as_down() {
        let r = Readiness::new(vec![(
            "slow".into(),
            probe(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                Ok(())
            }),
        )]);
        let rep = r.report().await;
        assert_eq!(rep.down, vec!["slow".to_owned()]);
    }
}
