//! One Sakura node: ingest, the engine, Flight SQL and HTTP, started together and stopped
//! together. `serve` runs it against the configured Kafka and storage; `ingest` the same
//! without Flight SQL; `demo` against its built-in broker and a local directory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use engine::Engine;
use flight::{HttpState, MetricsRenderer, QueryExecutor};
use ingest::{IngestStats, Pipeline};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{Error, Result};

/// A started node.
pub(crate) struct Node {
    pub(crate) engine: Engine,
    pub(crate) stats: Arc<IngestStats>,
    /// `None` for an ingest-only node.
    pub(crate) flight_addr: Option<SocketAddr>,
    pub(crate) http_addr: SocketAddr,
    tasks: JoinSet<(&'static str, Result<()>)>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("flight_addr", &self.flight_addr)
            .field("http_addr", &self.http_addr)
            .finish()
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

impl Node {
    /// Creates the tables, joins the consumer group and starts serving (Flight SQL only when
    /// `with_flight`). `extra_metrics` is appended to `/metrics`.
    pub(crate) async fn start(
        cfg: &Config,
        extra_metrics: Option<MetricsRenderer>,
        with_flight: bool,
    ) -> Result<Self> {
        // Checked before anything starts, so a bad [auth] section fails fast. Ingest-only
        // processes serve no queries and need no credentials.
        let auth = if with_flight {
            let auth = flight::Authenticator::new(&cfg.auth)?;
            auth.start().await?;
            if !auth.required() {
                warn!("authentication is off (auth.required = false): every caller is an admin");
            }
            let policy = Arc::new(flight::Policy::new(cfg.roles.clone())?);
            let limits = flight::Limits::new(&cfg.limits)?;
            Some((auth, policy, limits, cfg.tls.server_config()?))
        } else {
            None
        };
        let http_tls = cfg.tls.http_config()?;
        let storage = cfg.storage()?;
        let stats = Arc::new(IngestStats::default());
        let (shutdown, rx) = watch::channel(false);

        // Ingest first: it creates missing tables, so the engine sees their stored schemas.
        let pipeline = Pipeline::start(&cfg.kafka, &cfg.ingest, &storage, stats.clone()).await?;
        let mut engine = Engine::new(storage.clone(), &cfg.engine).await?;
        if with_flight && cfg.limits.max_query_memory_mb > 0 {
            let mb = usize::try_from(cfg.limits.max_query_memory_mb).unwrap_or(usize::MAX);
            engine = engine.with_query_memory_limit(mb.saturating_mul(1 << 20));
        }

        let flight_listener = match auth {
            Some((auth, policy, limits, tls)) => Some((
                flight::bind(&cfg.flight.listen).await?,
                auth,
                policy,
                limits,
                tls,
            )),
            None => None,
        };

        let flight_addr = flight_listener
            .as_ref()
            .map(|(l, ..)| flight::local_addr(l))
            .transpose()?;
        let http_listener = flight::bind(&cfg.http.listen).await?;
        let http_addr = flight::local_addr(&http_listener)?;

        // Jobs run on serving nodes; ingest-only nodes leave them to those.
        let scheduler = if with_flight {
            let scheduler = Arc::new(crate::jobs_cli::scheduler(cfg, &engine)?);
            engine.register_system_table(
                "jobs",
                Arc::new(engine::ComputedTable(jobs::JobsTable::new(
                    scheduler.jobs(),
                    scheduler.history(),
                    scheduler.clock(),
                ))),
            )?;
            Some(scheduler)
        } else {
            None
        };
        let job_metrics = scheduler.as_ref().map(|s| s.metrics());

        let ready = Arc::new(AtomicBool::new(false));
        let metrics_stats = stats.clone();
        let metrics: MetricsRenderer = Arc::new(move || {
            let mut text = metrics_stats.render_prometheus();
            if let Some(jobs) = &job_metrics {
                text.push_str(&jobs.render());
            }
            if let Some(extra) = &extra_metrics {
                text.push_str(&extra());
            }
            text
        });

        let mut tasks = JoinSet::new();
        let mut api = None;
        if let Some((listener, auth, policy, limits, tls)) = flight_listener {
            let executor: Arc<dyn QueryExecutor> = Arc::new(engine.clone());
            api = Some(Arc::new(flight::SqlApi::new(
                executor.clone(),
                auth.clone(),
                policy.clone(),
                limits.clone(),
            )));
            let stop = stopped(rx.clone());
            tasks.spawn(async move {
                (
                    "flight",
                    flight::serve_flight(listener, executor, auth, policy, limits, tls, stop)
                        .await
                        .map_err(Error::from),
                )
            });
        }
        let state = HttpState {
            ready: ready.clone(),
            metrics,
            api,
        };
        let stop = stopped(rx.clone());
        tasks.spawn(async move {
            (
                "http",
                flight::serve_http(http_listener, state, http_tls, stop)
                    .await
                    .map_err(Error::from),
            )
        });
        if let Some(scheduler) = scheduler.filter(|_| cfg.scheduler.enabled) {
            let jobs_rx = rx.clone();
            tasks.spawn(async move {
                (
                    "scheduler",
                    scheduler.run(jobs_rx).await.map_err(Error::from),
                )
            });
        }
        let ingest_rx = rx.clone();
        tasks.spawn(async move { ("ingest", pipeline.run(ingest_rx).await.map_err(Error::from)) });
        ready.store(true, Ordering::Relaxed);
        info!(flight_addr = ?flight_addr, %http_addr, storage = %storage.root, "node started");
        Ok(Self {
            engine,
            stats,
            flight_addr,
            http_addr,
            tasks,
            shutdown,
        })
    }

    /// Waits until one of the node's tasks ends (which it only does on failure).
    pub(crate) async fn failed(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            Some(Ok((name, Ok(())))) => Err(Error::Task(format!("{name} stopped unexpectedly"))),
            Some(Ok((name, Err(e)))) => Err(Error::Task(format!("{name} failed: {e}"))),
            Some(Err(e)) => Err(Error::Task(e.to_string())),
            None => std::future::pending().await,
        }
    }

    /// Stops serving, flushes ingest and waits for every task.
    pub(crate) async fn stop(mut self) -> Result<()> {
        let _ = self.shutdown.send(true);
        let mut first_err = None;
        while let Some(joined) = self.tasks.join_next().await {
            let res = match joined {
                Ok((name, r)) => r.map_err(|e| Error::Task(format!("{name}: {e}"))),
                Err(e) => Err(Error::Task(e.to_string())),
            };
            if let Err(e) = res {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
