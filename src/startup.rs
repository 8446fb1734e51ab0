//! Building and running the server: load mappings and profiles once, open the store,
//! serve until told to stop, then drain.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::clock::Clock;
use crate::config::Config;
use crate::fhir::Profiles;
use crate::gateway::Gateway;
use crate::http::{self, AppState};
use crate::mapping::Mappings;
use crate::relay::Relay;
use crate::store::sqlite::SqliteStore;

/// A built application: its HTTP state, its TLS settings (when it serves TLS itself)
/// and the store to close after serving.
pub struct App {
    pub state: AppState,
    pub store: SqliteStore,
    tls: Option<rustls::ServerConfig>,
    timeouts: crate::tls::Timeouts,
}

/// Loads everything the config names. Fails early on a bad mapping file or profile.
pub fn build(config: Config, clock: Arc<dyn Clock>) -> anyhow::Result<App> {
    let mappings = Mappings::load(&config.mappings_dir)
        .with_context(|| format!("loading mappings from {}", config.mappings_dir.display()))?;
    let profiles = Profiles::load(&config.profiles_dir)
        .with_context(|| format!("loading profiles from {}", config.profiles_dir.display()))?;
    build_with(config, clock, Arc::new(mappings), Arc::new(profiles))
}

/// As [`build`], with mappings and profiles already loaded (tests share them).
pub fn build_with(
    config: Config,
    clock: Arc<dyn Clock>,
    mappings: Arc<Mappings>,
    profiles: Arc<Profiles>,
) -> anyhow::Result<App> {
    // Certificates first: a bad one stops start-up before the store is opened.
    let tls = match &config.tls {
        Some(tls) => Some(crate::tls::server_config(tls)?),
        None => None,
    };
    let timeouts = crate::tls::Timeouts::from_config(&config);
    let store = SqliteStore::open(&config.data_dir)
        .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
    let principals = config.principals();
    let gateway = Arc::new(Gateway {
        store: Arc::new(store.clone()),
        mappings,
        profiles,
        config,
        clock,
    });
    let metrics = Arc::new(crate::metrics::Metrics::new());
    // Partners' certificates are read here; a bad one stops start-up with the store
    // closed, not left to its drop.
    let relay = match Relay::new(gateway.clone(), metrics.clone()) {
        Ok(relay) => relay,
        Err(e) => {
            drop(gateway);
            store.close();
            return Err(e.context("building the partner clients"));
        }
    };
    Ok(App {
        state: AppState::new(gateway, principals, relay, metrics),
        store,
        tls,
        timeouts,
    })
}

/// Serves `app` on `listener` until `shutdown` resolves, then finishes in-flight
/// requests and closes the store. Everything acknowledged was durable before its answer.
pub async fn run(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = http::router(app.state.clone());
    // The relay stops when the server does (attempts in flight finish first), and so do
    // feed long-polls, which would otherwise hold the drain for their whole wait.
    let stopping = app.state.stopping.clone();
    let mut relay_stopped = stopping.subscribe();
    let relay = tokio::spawn(app.state.relay.clone().run(async move {
        let _ = relay_stopped.wait_for(|stop| *stop).await;
    }));
    let stop = async move {
        shutdown.await;
        stopping.send_replace(true);
    };
    // The peer address each request carries lets the envelope believe a proxy's
    // client-certificate header only from the proxy itself.
    let result = crate::tls::serve(listener, router, app.tls, app.timeouts, stop).await;
    let _ = relay.await;
    // The last minute's refusals not itemised, before the store closes.
    if let Some(summary) = app.state.refusals.take() {
        let at = app.state.gateway.now();
        if let Err(e) = app.state.gateway.store.append(summary.record(at)).await {
            tracing::error!(error = %e, "could not write a refusals summary to the audit");
        }
    }
    drop(app.state);
    let store = app.store;
    tokio::task::spawn_blocking(move || store.close())
        .await
        .ok();
    result
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
