//! The serve lock and the discovery files: one server per data folder;
//! `discover` finds it only while it runs, with a working admin token in a
//! 0600 file that is made anew at each start.

use std::os::unix::fs::PermissionsExt;

use super::*;

#[tokio::test]
async fn one_server_per_data_folder_and_discovery_follows_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    assert!(vetting_http::api::discover(dir.path()).unwrap().is_none());
    let server = start_server(dir.path()).await;
    let found = vetting_http::api::discover(dir.path()).unwrap().unwrap();
    assert_eq!(found.url, format!("http://{}", server.local_addr()));
    assert_eq!(found.pid, std::process::id());
    let mode = std::fs::metadata(dir.path().join("cli-admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let client = reqwest::Client::new();
    let pause = client
        .post(format!("{}/api/v1/dispatch/pause", found.url))
        .bearer_auth(&found.token)
        .send()
        .await
        .unwrap();
    assert_eq!(pause.status(), 200, "the token is an admin's");

    // a second server on the same folder is refused, saying why
    let second = vetting_http::Server::new(loopback_config(dir.path()))
        .bcrypt_cost(4)
        .power(Arc::new(NoPower))
        .start()
        .await;
    let error = second.expect_err("a second server is refused");
    let message = error.to_string();
    assert!(
        matches!(error, vetting_http::ServeError::Lock(_)),
        "{message}"
    );
    assert!(message.contains("another `vetting serve`"), "{message}");
    assert!(
        message.contains(&std::process::id().to_string()),
        "{message}"
    );

    server.shutdown().await.unwrap();
    assert!(vetting_http::api::discover(dir.path()).unwrap().is_none());
    assert!(!dir.path().join("serve.json").exists());

    // a restart makes a new token and revokes the old one
    let server = start_server(dir.path()).await;
    let again = vetting_http::api::discover(dir.path()).unwrap().unwrap();
    assert_ne!(again.token, found.token);
    let old = client
        .get(format!("{}/api/v1/dispatch", again.url))
        .bearer_auth(&found.token)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
    let new = client
        .get(format!("{}/api/v1/dispatch", again.url))
        .bearer_auth(&again.token)
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
    let live: Vec<String> = server
        .orchestrator()
        .operator()
        .list_api_tokens()
        .await
        .unwrap()
        .into_iter()
        .filter(|token| token.revoked_at_ms.is_none())
        .map(|token| token.name)
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert!(live[0].starts_with("local-cli."), "{live:?}");
    server.shutdown().await.unwrap();
}

/// A server that holds the lock but whose files cannot be read is still
/// a server: `discover` says so instead of letting the CLI open the
/// database behind its back.
#[tokio::test]
async fn a_held_lock_without_discovery_files_is_an_error_not_a_free_folder() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path()).await;
    std::fs::remove_file(dir.path().join("serve.json")).unwrap();
    let error = vetting_http::api::discover(dir.path()).unwrap_err();
    assert!(error.to_string().contains("serve.json"), "{error}");
    server.shutdown().await.unwrap();
    assert!(vetting_http::api::discover(dir.path()).unwrap().is_none());
}

/// Two servers sharing one database, each with its own data folder (as
/// several orchestrators share one PostgreSQL, with one secret key): each
/// start makes its own local CLI token and leaves the other's working.
#[tokio::test]
async fn servers_sharing_a_database_keep_each_others_cli_token() {
    let shared = tempfile::tempdir().unwrap();
    let database = format!(
        "sqlite://{}?mode=rwc",
        shared.path().join("shared.db").display()
    );
    let first_dir = tempfile::tempdir().unwrap();
    let second_dir = tempfile::tempdir().unwrap();
    let start = |dir: &Path| {
        let mut config = loopback_config(dir);
        config.database_url = Some(vetting_core::config::Secret(database.clone()));
        // processes sharing a database share the secret key, as they must
        // for run tokens
        config.secret_key = Some(vetting_core::config::Secret("ab".repeat(32)));
        vetting_http::Server::new(config)
            .bcrypt_cost(4)
            .power(Arc::new(NoPower))
            .start()
    };
    let first = start(first_dir.path()).await.unwrap();
    let first_found = vetting_http::api::discover(first_dir.path())
        .unwrap()
        .unwrap();
    let second = start(second_dir.path()).await.unwrap();
    let second_found = vetting_http::api::discover(second_dir.path())
        .unwrap()
        .unwrap();
    let client = reqwest::Client::new();
    for found in [&first_found, &second_found] {
        let answer = client
            .get(format!("{}/api/v1/dispatch", found.url))
            .bearer_auth(&found.token)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 200, "{}", found.url);
    }
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
}
