//! The commands that are not requests to the operator API: `serve`,
//! `demo`, `config check`, `db migrate`, `completions`, `man`.

use std::path::Path;

use clap::CommandFactory;
use vetting_core::config::Config;
use vetting_core::store::Store;

use crate::cli::Cli;
use crate::error::{CliResult, Failure};

pub async fn serve(config: Config) -> CliResult<()> {
    let server = vetting_http::Server::new(config)
        .start()
        .await
        .map_err(|error| {
            // a config that does not make sense is an input error; the rest
            // (the database, the listen address, another server holding the
            // data folder) is something that cannot be reached
            let exit = match error {
                vetting_http::ServeError::Config(_) => crate::error::Exit::Input,
                vetting_http::ServeError::Lock(_) => crate::error::Exit::Refused,
                _ => crate::error::Exit::Unreachable,
            };
            Failure::of_error(exit, &error)
        })?;
    // a server goes on serving when whoever started it stops reading its
    // stdout: these lines are information, not output to end it over
    use std::io::Write;
    let mut stdout = std::io::stdout();
    if let Some(interface) = server.pxe_interface() {
        let _ = writeln!(stdout, "vetting serving PXE (dnsmasq) on {interface}");
    }
    let _ = writeln!(
        stdout,
        "vetting listening on http://{}",
        server.local_addr()
    );
    let _ = stdout.flush();
    server
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|error| Failure::of_error(crate::error::Exit::Internal, &error))?;
    Ok(())
}

pub async fn demo(config: Config, options: crate::demo::DemoOptions) -> CliResult<()> {
    let completed = crate::demo::run(config, options)
        .await
        .map_err(|error| Failure::internal(format!("{error:#}")))?;
    if completed {
        Ok(())
    } else {
        Err(Failure::new(
            crate::error::Exit::RunNotCompleted,
            "the demo run did not complete",
        ))
    }
}

pub fn config_check(file: &Path) -> CliResult<()> {
    let config = Config::load(Some(file))
        .map_err(|error| Failure::of_error(crate::error::Exit::Input, &error))?;
    crate::outln!("{} is valid", file.display());
    crate::outln!("{config:#?}");
    Ok(())
}

pub async fn db_migrate(config: Config) -> CliResult<()> {
    std::fs::create_dir_all(&config.data_dir).map_err(|error| {
        Failure::unreachable(format!("creating {}: {error}", config.data_dir.display()))
    })?;
    let unreachable = |error: vetting_core::store::StoreError| {
        Failure::unreachable(format!(
            "the database: {}",
            vetting_core::error::chain(&error)
        ))
    };
    let store = Store::connect(&config.database_url())
        .await
        .map_err(unreachable)?;
    let applied = store.migrate().await.map_err(unreachable)?;
    crate::outln!(
        "database at schema version {} (applied: {:?})",
        store.schema_version().await.map_err(unreachable)?,
        applied
    );
    Ok(())
}

pub fn completions(shell: clap_complete::Shell) {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "vetting", &mut out);
    crate::out!("{}", String::from_utf8_lossy(&out));
}

pub fn man() -> CliResult<()> {
    let page = clap_mangen::Man::new(Cli::command());
    let mut out = Vec::new();
    page.render(&mut out)
        .map_err(|error| Failure::internal(format!("rendering the man page: {error}")))?;
    // the subcommands' pages too, one after the other
    for sub in Cli::command().get_subcommands() {
        clap_mangen::Man::new(sub.clone())
            .title(format!("vetting-{}", sub.get_name()))
            .render(&mut out)
            .map_err(|error| Failure::internal(format!("rendering the man page: {error}")))?;
    }
    crate::out!("{}", String::from_utf8_lossy(&out));
    Ok(())
}
