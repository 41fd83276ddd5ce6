//! `vetting_http::Server`, the embeddable server: on an ephemeral loopback
//! port it tells agents the address it really serves, powers runs with the
//! drivers it was given, holds its notifiers where the orchestrator reaches
//! them, and `shutdown` closes the port; a listen address in use fails
//! before the store is touched.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use vetting_core::model::Host;
use vetting_core::notify::{Notification, Notifier, NotifyError, Route};
use vetting_core::power::PowerDrivers;
use vetting_core::power::{PowerDriver, PowerError, PowerLog, PowerOutcome};

use super::*;

#[derive(Debug, Default)]
struct CountingDrivers {
    calls: Arc<AtomicUsize>,
}

impl PowerDrivers for CountingDrivers {
    fn driver_for(&self, _host: &Host) -> Result<Box<dyn PowerDriver>, PowerError> {
        Ok(Box::new(CountingDriver {
            calls: self.calls.clone(),
        }))
    }
}

struct CountingDriver {
    calls: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl PowerDriver for CountingDriver {
    fn name(&self) -> &str {
        "counting"
    }
    async fn power_on_for_pxe(&self, _log: &dyn PowerLog) -> Result<PowerOutcome, PowerError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(PowerOutcome::PoweredOn {
            action: "counted".into(),
        })
    }
}

struct Silent;

#[async_trait::async_trait]
impl Notifier for Silent {
    fn name(&self) -> &str {
        "silent"
    }
    async fn send(&self, _notification: &Notification) -> Result<(), NotifyError> {
        Ok(())
    }
}

fn loopback_config(dir: &Path) -> Config {
    let mut config = Config {
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.listen = ([127, 0, 0, 1], 0).into();
    config.iperf.enabled = false;
    config.dispatcher.interval_ms = 50;
    config
}

#[tokio::test]
async fn the_embedded_server_serves_powers_with_its_drivers_and_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let drivers = CountingDrivers::default();
    let calls = drivers.calls.clone();
    let server = vetting_http::Server::new(loopback_config(dir.path()))
        .bcrypt_cost(4)
        .power(Arc::new(drivers))
        .notifier("silent", Arc::new(Silent), Route::all())
        .start()
        .await
        .unwrap();
    let address = server.local_addr();
    assert_ne!(address.port(), 0);
    // agents are told the address really bound, not port 0
    assert_eq!(server.url(), format!("http://{address}"));
    assert_eq!(server.orchestrator().notifiers().names(), ["silent"]);
    let health = reqwest::get(format!("{}/healthz", server.url()))
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "ok\n");

    // the reconcilers run, with the drivers given
    let orchestrator = server.orchestrator().clone();
    let actor = Actor::operator("test");
    let host = orchestrator
        .operator()
        .register_host(
            NewHost {
                name: "embedded-1".into(),
                macs: vec!["02:00:00:00:77:01".into()],
                ..Default::default()
            },
            &actor,
        )
        .await
        .unwrap();
    let run = orchestrator
        .operator()
        .start_run(host.id, &actor)
        .await
        .unwrap();
    let mut events = orchestrator.hub().subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while orchestrator
        .operator()
        .get_run(&run.id)
        .await
        .unwrap()
        .state
        != RunState::Booting
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run was not powered on"
        );
        let _ = tokio::time::timeout_at(deadline, events.recv()).await;
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // passes that read the run before its power outcome committed do not
    // power the host again (the dispatch's effect and the scan of
    // WaitingWoL runs both see it)
    for _ in 0..20 {
        orchestrator.poke();
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the host was powered twice"
    );

    server.shutdown().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "the port still accepts after shutdown"
    );
}

#[tokio::test]
async fn a_listen_address_in_use_fails_naming_it_before_the_store_is_opened() {
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = loopback_config(&dir.path().join("data"));
    config.listen = address;
    let error = vetting_http::Server::new(config).start().await.unwrap_err();
    assert!(
        matches!(&error, vetting_http::ServeError::Listen { address: named, .. } if *named == address),
        "{error:?}"
    );
    assert_eq!(error.to_string(), format!("listening on {address}"));
    assert!(!dir.path().join("data").exists(), "nothing was created");
}
