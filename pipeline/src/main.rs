//! `dwcp-monitor`: the command line.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use dwcp_pipeline::{config, demo, init_logging, topology};
use dwcp_schemas::{decode, Encoding, RegionContext, Signal};

/// mimalloc: the operators and the PromQL evaluator allocate many small label sets and sample
/// vectors; with glibc's allocator half their time went to malloc and free (benches/README.md).
/// Built without transparent huge pages (`no_thp`): with them, mimalloc's pages were faulted in
/// 2 MiB at a time and zeroing them took 28 % of the worker's CPU (benches/README.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "dwcp-monitor",
    version,
    about = "Stream processing for multi-region DWCP observability"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a worker with a configuration file.
    Run {
        /// The YAML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a configuration file and exit (0 when valid).
    ValidateConfig {
        /// The YAML configuration.
        file: PathBuf,
    },
    /// Decode one OTLP message from FILE (or `-` for stdin) and print its records as JSON lines.
    Decode {
        /// metrics, traces or logs.
        #[arg(long)]
        signal: Signal,
        /// otlp_proto or otlp_json.
        #[arg(long, default_value = "otlp_proto")]
        encoding: Encoding,
        /// Region for records whose resource has none.
        #[arg(long)]
        region: Option<String>,
        /// The message, or `-` for stdin.
        file: String,
    },
    /// Run rule unit tests written in promtool's test-file format (exit 1 when any fails).
    TestRules {
        /// Window semantics of this Prometheus major version: 3 (range selectors exclude their
        /// left end) or 2 (include it).
        #[arg(long, default_value_t = 3)]
        prometheus_version: u8,
        /// Test files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Score the anomaly detectors on labeled CSV series with the Numenta Anomaly Benchmark's
    /// method.
    EvalAnomaly {
        /// Directory of `category/file.csv` series (`timestamp,value`).
        #[arg(long)]
        data: PathBuf,
        /// Labeled windows: `{"category/file.csv": [[start, end], ...]}`.
        #[arg(long)]
        labels: PathBuf,
        /// standard, reward_low_FP or reward_low_FN (default: all three).
        #[arg(long)]
        profile: Option<String>,
    },
    /// Grafana: write the generated dashboards and provisioning files, or push the dashboards.
    Grafana {
        #[command(subcommand)]
        action: GrafanaAction,
    },
    /// Run the whole pipeline on an embedded Kafka with simulated regions, until Ctrl-C.
    Demo {
        /// Stop after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration_secs: Option<u64>,
        /// HTTP port for /metrics.
        #[arg(long, default_value = "127.0.0.1:8686")]
        listen: String,
        /// Print the summary as plain lines instead of redrawing the screen.
        #[arg(long)]
        plain: bool,
        /// Also write every series to this Prometheus remote-write URL
        /// (`http://127.0.0.1:9090/api/v1/write`), to see the demo in Grafana.
        #[arg(long)]
        remote_write: Option<String>,
    },
}

#[derive(Subcommand)]
enum GrafanaAction {
    /// Write DIR/dashboards/*.json and DIR/provisioning/{datasources,dashboards}/dwcp.yaml.
    Export {
        /// The directory (deploy/grafana in this repository).
        dir: PathBuf,
    },
    /// Create or overwrite every dashboard through Grafana's HTTP API.
    Push {
        /// Grafana's URL.
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
        /// The environment variable holding a service-account token (never on the command line).
        #[arg(long, default_value = "GRAFANA_TOKEN")]
        token_env: String,
        /// The folder to put them in (created when missing); default: General.
        #[arg(long)]
        folder_uid: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::TestRules {
            files,
            prometheus_version,
        } => {
            let mut failed = false;
            for f in &files {
                println!("Unit Testing:  {}", f.display());
                match dwcp_pipeline::test_rules::run_file(f, prometheus_version == 2) {
                    Ok(failures) if failures.is_empty() => println!("  SUCCESS\n"),
                    Ok(failures) => {
                        failed = true;
                        println!("  FAILED:");
                        for fl in failures {
                            println!("    {fl}");
                        }
                        println!();
                    }
                    Err(e) => {
                        failed = true;
                        println!("  FAILED:\n    {e}\n");
                    }
                }
            }
            if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::EvalAnomaly { data, labels, profile } => {
            match dwcp_pipeline::eval_anomaly::run(&data, &labels, profile.as_deref()) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::ValidateConfig { file } => match config::load(&file) {
            Ok(c) => {
                println!("{}: valid ({} topic entries)", file.display(), c.topics.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Decode {
            signal,
            encoding,
            region,
            file,
        } => decode_cmd(signal, encoding, region, &file),
        Command::Run { config } => {
            let cfg = match config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            init_logging(cfg.config.log.format, &cfg.config.log.level);
            runtime(async move {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(stop_on_signal(tx));
                topology::run(cfg, rx, |_| {}).await
            })
        }
        Command::Grafana {
            action: GrafanaAction::Export { dir },
        } => match dwcp_pipeline::grafana::export(&dir) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Grafana {
            action:
                GrafanaAction::Push {
                    url,
                    token_env,
                    folder_uid,
                },
        } => {
            let token = std::env::var(&token_env).ok().filter(|t| !t.is_empty());
            if token.is_none() {
                eprintln!("warning: {token_env} is not set; pushing without a token");
            }
            runtime(async move {
                let client =
                    dwcp_pipeline::grafana::client::GrafanaClient::new(&url, token, std::time::Duration::from_secs(10))
                        .map_err(|e| anyhow::anyhow!(e))?;
                let uids = client
                    .push_all(folder_uid.as_deref())
                    .await
                    .map_err(|e| anyhow::anyhow!(e))?;
                for u in uids {
                    println!("{url}/d/{u}");
                }
                Ok(())
            })
        }
        Command::Demo {
            duration_secs,
            listen,
            plain,
            remote_write,
        } => {
            init_logging(config::LogFormat::Human, "warn");
            runtime(async move {
                let (tx, rx) = tokio::sync::watch::channel(false);
                tokio::spawn(stop_on_signal(tx.clone()));
                if let Some(secs) = duration_secs {
                    tokio::spawn(async move {
                        tokio::time::sleep(std::time::Duration::from_secs(secs)).await;
                        let _ = tx.send(true);
                    });
                }
                demo::run(
                    demo::DemoOptions {
                        listen,
                        plain,
                        remote_write,
                    },
                    rx,
                )
                .await
            })
        }
    }
}

fn runtime(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(fut);
    // A task still blocked at this point (a client's close) does not hold the exit.
    rt.shutdown_timeout(std::time::Duration::from_secs(5));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn stop_on_signal(tx: tokio::sync::watch::Sender<bool>) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                let _ = tx.send(true);
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
        tracing::info!("stopping: draining queues and committing offsets (a second signal stops at once)");
        let _ = tx.send(true);
        // A second signal: out now, as the Collector and Vector do. Offsets are committed only
        // for what the sinks accepted, so what is not drained is read again after a restart.
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("second stop signal: exiting without draining; records not yet accepted by every sink are read again after a restart");
        std::process::exit(1);
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
        tracing::info!("stopping: draining queues and committing offsets");
        let _ = tx.send(true);
    }
}

fn decode_cmd(signal: Signal, encoding: Encoding, region: Option<String>, file: &str) -> ExitCode {
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(|_| ())
    } else {
        std::fs::read(file).map(|b| bytes = b)
    };
    if let Err(e) = read {
        eprintln!("{file}: cannot read: {e}");
        return ExitCode::from(2);
    }
    let ctx = RegionContext::new(region.map(Into::into));
    let decoded = match decode(signal, encoding, &bytes, &ctx) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut buf = Vec::new();
    dwcp_sinks::file::encode(&decoded.records, &mut buf);
    if out.write_all(&buf).and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
