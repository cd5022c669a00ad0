//! The auditor's commands: `verify` (with `--checkpoint`), `export`, `checkpoint`.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use eventstore::checkpoint::{self, SignOutcome, SignedCheckpoint, SigningKey};
use eventstore::{EventStore, VerifyReport};
use futures_util::StreamExt;

use crate::cli::VerifyArgs;

fn print_report(report: &VerifyReport) {
    if report.ok {
        match &report.head {
            Some(head) => println!(
                "ok: {} events checked; head {} {}",
                report.checked, head.position, head.hash
            ),
            None => println!("ok: the history is empty"),
        }
        if report.unsealed > 0 {
            println!(
                "{} committed events are beyond the verified head (not sealed yet, or sealed while verifying)",
                report.unsealed
            );
        }
        if let (Some(authenticated), Some(unauthenticated)) =
            (report.authenticated, report.unauthenticated)
        {
            println!(
                "{authenticated} events authenticated by a history key; {unauthenticated} written before a key was set"
            );
        }
    } else {
        println!(
            "TAMPERED: first bad position {}: {} ({} events before it are good)",
            report.first_bad_position.unwrap_or_default(),
            report.problem.as_deref().unwrap_or("mismatch"),
            report.checked
        );
    }
}

fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The key the checkpoint must be signed by: base64, PEM text, or a PEM file.
fn trusted_key(given: &str) -> anyhow::Result<checkpoint::VerifyingKey> {
    let path = Path::new(given);
    let text = if path.is_file() {
        std::fs::read_to_string(path)?
    } else {
        given.to_owned()
    };
    Ok(checkpoint::parse_public_key(&text)?)
}

pub async fn verify(store: &EventStore, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let chain = verify_chain(store, args).await?;
    if !args.read_models {
        return Ok(chain);
    }
    let check =
        projections::check_read_models(store, &projections::ReplayOptions::default()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&check)?);
    } else {
        match &check.difference {
            None => println!(
                "read models ok: every table equals a fold of the history up to position {}",
                check.position
            ),
            Some(d) => println!(
                "READ MODELS DIFFER: {} row {} is {} ({})",
                d.table,
                d.key.as_deref().unwrap_or("?"),
                if d.side == "live" {
                    "in the read models but not in a fold of the history"
                } else {
                    "in a fold of the history but not in the read models"
                },
                d.row
            ),
        }
    }
    Ok(if check.ok && chain == ExitCode::SUCCESS {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

async fn verify_chain(store: &EventStore, args: &VerifyArgs) -> anyhow::Result<ExitCode> {
    let Some(path) = &args.checkpoint else {
        let report = store.verify().await?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print_report(&report);
        }
        return Ok(exit(report.ok));
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let signed: SignedCheckpoint = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not a checkpoint: {e}", path.display()))?;
    let trusted = args.public_key.as_deref().map(trusted_key).transpose()?;
    let report = store.check_checkpoint(&signed, trusted.as_ref()).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(exit(report.ok));
    }
    if let Some(verification) = &report.verification {
        print_report(verification);
    }
    if report.ok {
        println!(
            "checkpoint ok: today's history extends position {} ({}) signed at {} by {}",
            signed.position, signed.hash, signed.signed_at, signed.public_key
        );
        if trusted.is_none() {
            println!("compare the signer's key with the one the operator published (or pass --public-key)");
        }
    } else {
        println!(
            "CHECKPOINT REFUSED: {}",
            report.problem.as_deref().unwrap_or("it does not hold")
        );
    }
    Ok(exit(report.ok))
}

pub async fn export(
    store: &EventStore,
    after: u64,
    source_prefix: &str,
) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout();
    let until = store.log_head().await?.map_or(0, |(position, _)| position);
    let mut chunks = std::pin::pin!(store.export(after, until, source_prefix));
    while let Some(chunk) = chunks.next().await {
        match out.write_all(&chunk?) {
            Ok(()) => {}
            // The reader went away (`crier export | head`): not our failure.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            Err(e) => return Err(e.into()),
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a new secret file, readable by its owner only; refuses to replace one.
fn write_secret_file(out: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

pub fn history_keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let key = eventstore::HistoryKey::generate()?;
    write_secret_file(
        out,
        &format!(
            "# crier history key {}: keep it where the database never sees it\n{}\n",
            key.id_hex(),
            key.to_line()
        ),
    )?;
    println!("{}", key.id_hex());
    Ok(ExitCode::SUCCESS)
}

pub fn keygen(out: &Path) -> anyhow::Result<ExitCode> {
    let (key, pem) = checkpoint::generate_signing_key()?;
    write_secret_file(out, &pem)?;
    println!(
        "{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            key.verifying_key().to_bytes()
        )
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn sign(store: &EventStore, key: &SigningKey) -> anyhow::Result<ExitCode> {
    // A one-off signing trusts nothing stored: it recomputes the whole chain.
    match store.sign_checkpoint(key, None).await? {
        SignOutcome::Signed(signed) | SignOutcome::Unchanged(signed) => {
            println!("{}", serde_json::to_string_pretty(&signed)?);
            Ok(ExitCode::SUCCESS)
        }
        SignOutcome::EmptyHistory => {
            eprintln!("nothing to sign: the history is empty");
            Ok(ExitCode::from(1))
        }
        SignOutcome::Refused(report) => {
            print_report(&report);
            eprintln!("refused to sign: the chain does not verify");
            Ok(ExitCode::from(1))
        }
        SignOutcome::Contradicted(stored) => {
            eprintln!(
                "refused to sign: the stored checkpoint of this key at position {} is not its \
                 signature of today's link there (a forged row, or a history rewritten and \
                 re-linked since it was signed)",
                stored.position
            );
            Ok(ExitCode::from(1))
        }
    }
}
