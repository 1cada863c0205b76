//! The SIP registration agent: keeps many SIP accounts from a database registered at their registrars, a
//! drop-in for SEMS `db_reg_agent` (same tables, same status codes, same DI functions, same options).
//!
//! Layout: [`sip`] is the protocol (pure message building/parsing and digest, plus sockets and DNS);
//! [`engine`] owns every binding, timer and transaction in one task; [`writer`] batches status rows into
//! the database; [`db`] speaks the SEMS schema; [`http`] is the control surface (JSON-RPC `/rpc` with the
//! DI functions, REST `/api/v1/sip/registrations`). Hand-written on purpose: the RFC 3261 non-INVITE client
//! transaction (Timer E/F), digest (RFC 7616/8760) and the scheduler; rsip prints and tokenizes messages.

pub mod config;
pub mod db;
mod engine;
pub mod http;
mod metrics;
pub mod sip;
pub mod status;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rtcplane_event_bus::Bus;
use rtcplane_storage::{ConnectOptions, Storage};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::{Config, ConfigError, Transport};
pub use engine::{Account, BindingView, ControlError, ListFilter};
pub use status::Status;

use engine::{Command, Engine};

/// Why the agent did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Bad configuration.
    #[error("sip_agent.{}: {}", .0.key, .0.message)]
    Config(ConfigError),
    /// The separate database could not be reached.
    #[error("sip_agent.database_url: {0}")]
    Connect(#[from] rtcplane_storage::Error),
    /// The SEMS tables could not be read.
    #[error("{0} (check sip_agent.joined_query and sip_agent.registrations_table)")]
    Db(#[from] db::DbError),
    /// The SIP port could not be bound.
    #[error("sip_agent.listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The running agent; cheap to clone.
#[derive(Clone, Debug)]
pub struct Agent {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    commands: mpsc::Sender<Command>,
    db: db::Db,
    local: SocketAddr,
    db_healthy: Arc<AtomicBool>,
    stopped: CancellationToken,
}

/// Starts the agent: reads every subscription, schedules each as SEMS does on start (ACTIVE bindings that
/// are still valid are refreshed later, not now), binds the SIP socket and runs until `shutdown`.
pub async fn start(
    config: Config,
    bus: &Bus,
    storage: &Storage,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) -> Result<Agent, StartError> {
    config.validate().map_err(StartError::Config)?;
    metrics::describe();
    let storage = if config.database_url.is_empty() {
        storage.clone()
    } else {
        Storage::connect(&ConnectOptions::new(config.database_url.clone())).await?
    };
    let db = db::Db::new(
        storage,
        &config.joined_query,
        &config.registrations_table,
        config.save_contacts,
    )
    .await?;
    let subs = db.load(config.db_read_contact).await?;
    let missing: Vec<i64> = subs
        .iter()
        .filter(|s| s.status.is_none())
        .map(|s| s.subscriber_id)
        .collect();
    db.ensure_rows(&missing).await?;

    let (inbound_tx, inbound_rx) = mpsc::channel(8192);
    let sockets = sip::transport::Sockets::bind(config.listen, inbound_tx, shutdown.clone())
        .await
        .map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
    let local = sockets.local_addr();
    let (writes_tx, writes_rx) = mpsc::unbounded_channel();
    let db_healthy = Arc::new(AtomicBool::new(true));
    tasks.spawn(writer::run(db.clone(), writes_rx, db_healthy.clone()));

    let cfg = Arc::new(config);
    let mut engine = Engine::new(cfg, sockets, writes_tx, bus.publisher("sip_agent"));
    engine.load(subs);
    let (commands_tx, commands_rx) = mpsc::channel(1024);
    let stopped = CancellationToken::new();
    let done = stopped.clone();
    tasks.spawn(async move {
        engine.run(commands_rx, inbound_rx, shutdown).await;
        done.cancel();
    });
    tracing::info!(listen = %local, "sip agent started");
    Ok(Agent {
        inner: Arc::new(Inner {
            commands: commands_tx,
            db,
            local,
            db_healthy,
            stopped,
        }),
    })
}

impl Agent {
    /// The bound SIP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// Ready while the agent runs and its status writes succeed.
    pub fn ready(&self) -> Result<(), String> {
        if self.inner.stopped.is_cancelled() {
            return Err("the SIP agent has stopped".into());
        }
        if !self.inner.db_healthy.load(Ordering::Relaxed) {
            return Err("registration status cannot be written to the database".into());
        }
        Ok(())
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, ControlError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| ControlError::Stopping)?;
        rx.await.map_err(|_| ControlError::Stopping)
    }

    /// SEMS `createRegistration`: registers the account now (an existing registration with this id is
    /// replaced without de-registering it).
    pub async fn create(&self, account: Account) -> Result<(), ControlError> {
        account.validate()?;
        self.call(|r| Command::Create(account, r)).await?
    }

    /// SEMS `updateRegistration`: an unknown id is created; a changed user, realm or contact re-registers
    /// at once without de-registering the old binding; a changed password is used from the next REGISTER.
    pub async fn update(&self, account: Account) -> Result<(), ControlError> {
        account.validate()?;
        self.call(|r| Command::Update(account, r)).await?
    }

    /// SEMS `refreshRegistration`: REGISTER now.
    pub async fn refresh(&self, subscriber_id: i64) -> Result<(), ControlError> {
        self.call(|r| Command::Refresh(subscriber_id, r)).await?
    }

    /// SEMS `removeRegistration`: status TO_BE_REMOVED (5) at once, then de-REGISTER; REMOVED (4), or the
    /// row deleted with `delete_removed_registrations`, when the registrar confirms.
    pub async fn remove(&self, subscriber_id: i64) -> Result<(), ControlError> {
        self.call(|r| Command::Remove(subscriber_id, r)).await?
    }

    /// Bindings matching `filter`, and how many match in all.
    pub async fn list(
        &self,
        filter: ListFilter,
    ) -> Result<(usize, Vec<BindingView>), ControlError> {
        self.call(|r| Command::List(filter, r)).await
    }

    /// One binding.
    pub async fn get(&self, subscriber_id: i64) -> Result<Option<BindingView>, ControlError> {
        self.call(|r| Command::Get(subscriber_id, r)).await
    }

    /// How many bindings have each status (index = status code).
    pub async fn counts(&self) -> Result<[u64; 6], ControlError> {
        self.call(Command::Counts).await
    }

    /// Admin routes: `/rpc` (JSON-RPC 2.0) and `/api/v1/sip/registrations…`.
    pub fn admin_router(&self) -> axum::Router {
        http::router(self.clone())
    }

    pub(crate) fn db(&self) -> &db::Db {
        &self.inner.db
    }
}

impl Account {
    /// Checks what goes into SIP headers.
    pub fn validate(&self) -> Result<(), ControlError> {
        let bad = |s: &str| {
            s.chars()
                .any(|c| c.is_control() || c.is_whitespace() || matches!(c, '<' | '>' | '"'))
        };
        if self.user.is_empty() || self.user.len() > 256 || bad(&self.user) {
            return Err(ControlError::Invalid(
                "user must be 1 to 256 characters without spaces, quotes or <>".into(),
            ));
        }
        if self.pass.len() > 256 || self.pass.chars().any(char::is_control) {
            return Err(ControlError::Invalid(
                "pass must be at most 256 characters without control characters".into(),
            ));
        }
        if self.realm.len() > 256
            || sip::uri::ProxyUri::parse(&self.realm).is_err()
            || self.realm.contains(';')
        {
            return Err(ControlError::Invalid(
                "realm must be a host name or address (optionally :port)".into(),
            ));
        }
        if let Some(c) = &self.contact {
            let lower = c.to_ascii_lowercase();
            if !(lower.starts_with("sip:") || lower.starts_with("sips:")) || bad(c) || c.len() > 256
            {
                return Err(ControlError::Invalid(
                    "contact must be a sip: URI without spaces or <>".into(),
                ));
            }
        }
        Ok(())
    }
}
