//! `wisp image`: build, import, export, pull, push, list, remove and
//! collect images in a local image store (by default the daemon's,
//! `/var/lib/wisp/images`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use wisp::compile::Compiler;
use wisp::daemon::DEFAULT_IMAGE_DIR;
use wisp::runtimes::{
    code_layer, code_tar, unpack_code, Runtime, HANDLER_ANNOTATION, RUNTIME_ANNOTATION,
};
use wisp::units::parse_size;
use wisp_images::{gc, oci, GcOptions, KeepAs, Limits, Store, Tag};
use wisp_registry::{Options as RegistryOptions, Registry, RegistryRef};

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Build an image from a module (`.wasm` or `.wat`) and a directory of
    /// files; or, with --runtime, from a Python or JavaScript handler's code
    /// on that runtime's image (its layers shared, the code one more).
    Build(BuildArgs),
    /// Import the images of an OCI image layout (a directory, or its tar
    /// form): CNCF wasm artifacts as they are, plain OCI images holding a
    /// `.wasm` file converted.
    Import(ImportArgs),
    /// Export an image as an OCI image layout: a directory, or a tar if
    /// PATH ends in `.tar`.
    Export(ExportArgs),
    /// List the images, checking every blob and file layer (exit status 1
    /// if one is corrupt, missing, or a layer wisp refuses).
    Ls(StoreArg),
    /// Remove an image (a tag, or a digest with all its tags) and the
    /// blobs nothing else uses. Images deployed functions use are refused.
    Rm(RmArgs),
    /// Delete blobs nothing references and, with --max-size, evict the
    /// least recently used unpinned images and compiled artifacts.
    Gc(GcArgs),
    /// Pull an image from an OCI registry into the store (tagged
    /// `HOST/REPOSITORY:TAG`), verifying every blob.
    Pull(PullArgs),
    /// Push an image of the store to an OCI registry, byte for byte (its
    /// digest is the same there).
    Push(PushArgs),
}

/// How to reach a registry.
#[derive(Args)]
pub struct RegistryArgs {
    /// Reach the registry over plain HTTP. Registries on this machine
    /// (`localhost`, `127.0.0.0/8`, `::1`) always are, and so are those
    /// listed in WISP_REGISTRY_PLAIN_HTTP (comma-separated `HOST:PORT`).
    #[arg(long)]
    plain_http: bool,
}

#[derive(Args)]
pub struct PullArgs {
    /// The image: `[HOST[:PORT]/]REPOSITORY[:TAG|@sha256:HEX]` (Docker Hub
    /// without a host, `latest` without a tag).
    reference: String,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Args)]
pub struct PushArgs {
    /// The image in the store: `name:tag`, `sha256:<hex>` or a digest
    /// prefix.
    source: String,
    /// Where to push it: `HOST[:PORT]/REPOSITORY[:TAG]`; the source's own
    /// name if it is a registry reference (as `wisp image pull` tags).
    target: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    store: StoreArg,
}

/// Where the store is.
#[derive(Args)]
pub struct StoreArg {
    /// The image store (the daemon uses STATE_DIR/images).
    #[arg(long, env = "WISP_IMAGE_DIR", default_value = DEFAULT_IMAGE_DIR)]
    store: PathBuf,
}

#[derive(Args)]
pub struct BuildArgs {
    /// The module, `.wasm` or `.wat`; with `--runtime`, the handler's code
    /// (a directory, or one file).
    module: PathBuf,
    /// A directory whose files the image carries (one tar layer).
    #[arg(long, value_name = "DIR", conflicts_with = "runtime")]
    files: Option<PathBuf>,
    /// Build a handler's image on this runtime (`python3.12`,
    /// `javascript`), whose image must be in the store (scripts/build-runtimes
    /// puts it there): its layers, then the code at `/var/task`.
    #[arg(long, requires = "handler")]
    runtime: Option<String>,
    /// The handler the runtime calls, `MODULE.FUNCTION`: recorded in the
    /// image, so a deploy of it needs neither `runtime` nor `handler`.
    #[arg(long, requires = "runtime")]
    handler: Option<String>,
    /// The image's tag, `NAME[:TAG]` (the tag defaults to `latest`).
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    tag: String,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Args)]
pub struct ImportArgs {
    /// An OCI image layout directory, or a `.tar` (or `.tar.gz`) of one.
    path: PathBuf,
    /// Tag the imported image `NAME[:TAG]` (the layout must hold one
    /// image); otherwise each keeps the tag its `ref.name` annotation gives.
    #[arg(short = 't', long = "tag", value_name = "NAME:TAG")]
    tag: Option<String>,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The image: `name:tag`, `sha256:<hex>` or a digest prefix.
    reference: String,
    /// Where to write it: a new (or empty) directory, or a file ending in
    /// `.tar`.
    #[arg(short, long, value_name = "PATH")]
    output: PathBuf,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Args)]
pub struct RmArgs {
    /// The image: `name:tag`, `sha256:<hex>` or a digest prefix.
    reference: String,
    #[command(flatten)]
    store: StoreArg,
}

#[derive(Args)]
pub struct GcArgs {
    /// Evict unpinned images and compiled artifacts, least recently used
    /// first, until the store's blobs fit in this size (e.g. `1G`).
    #[arg(long, value_parser = parse_size, value_name = "SIZE")]
    max_size: Option<u64>,
    #[command(flatten)]
    store: StoreArg,
}

/// Runs a `wisp image` subcommand.
pub fn run(command: ImageCommand) -> Result<ExitCode> {
    match command {
        ImageCommand::Build(args) => build(args),
        ImageCommand::Import(args) => import(args),
        ImageCommand::Export(args) => export(args),
        ImageCommand::Ls(args) => ls(args),
        ImageCommand::Rm(args) => rm(args),
        ImageCommand::Gc(args) => collect(args),
        ImageCommand::Pull(args) => pull(args),
        ImageCommand::Push(args) => push(args),
    }
}

fn open(arg: &StoreArg) -> Result<Store> {
    Store::open(&arg.store)
        .with_context(|| format!("opening the image store {}", arg.store.display()))
}

/// Bytes for people: `512 B`, `1.5 KiB`, `10.0 MiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long ago `t` was, for people.
fn ago(t: Option<SystemTime>) -> String {
    let Some(secs) = t
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map(|d| d.as_secs())
    else {
        return "-".into();
    };
    match secs {
        0..60 => format!("{secs}s ago"),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86400),
    }
}

/// The module bytes of `path`: binary wasm as is, `.wat` text converted,
/// either checked by the compiler's validator.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let wasm = if bytes.starts_with(b"\0asm") {
        bytes
    } else {
        let parser = wat::Parser::new();
        parser
            .parse_bytes(Some(path), &bytes)
            .map_err(|e| {
                // One line: the message and where (`--> file:line:col`).
                let text = e.to_string();
                let mut lines = text.lines();
                let message = lines.next().unwrap_or_default();
                let at = lines
                    .find_map(|l| l.trim().strip_prefix("--> "))
                    .map(|at| format!(" at {at}"))
                    .unwrap_or_default();
                anyhow::anyhow!("invalid module: {message}{at}")
            })?
            .into_owned()
    };
    Compiler::new(None)?
        .validate(&wasm)
        .with_context(|| format!("{}", path.display()))?;
    Ok(wasm)
}

fn build(args: BuildArgs) -> Result<ExitCode> {
    let tag = Tag::parse(&args.tag)?;
    if let (Some(runtime), Some(handler)) = (&args.runtime, &args.handler) {
        return build_handler(&args, &tag, runtime, handler);
    }
    let module = read_module(&args.module)?;
    if let Some(dir) = &args.files {
        if !dir.is_dir() {
            bail!("--files {}: not a directory", dir.display());
        }
    }
    let store = open(&args.store)?;
    let image = store.build(&module, args.files.as_deref(), Some(&tag))?;
    eprintln!(
        "wisp: built {tag} ({} layer(s), {})",
        image.manifest().layers().len(),
        human_size(image.size())
    );
    println!("{}", image.digest());
    Ok(ExitCode::SUCCESS)
}

/// `wisp image build --runtime R --handler H CODE`: the runtime's image
/// with the code on top, the runtime and handler in its annotations.
fn build_handler(args: &BuildArgs, tag: &Tag, runtime: &str, handler: &str) -> Result<ExitCode> {
    let runtime = Runtime::find(runtime)?;
    runtime.check_handler(handler)?;
    let code = code_tar(&args.module)
        .and_then(|tar| unpack_code(&tar, Limits::default()))
        .with_context(|| format!("reading the code {}", args.module.display()))?;
    let store = open(&args.store)?;
    let base = store
        .resolve(runtime.image)
        .and_then(|digest| store.image(&digest))
        .with_context(|| {
            format!(
                "runtime `{}` is not in the store {store} (run scripts/build-runtimes --store {store})",
                runtime.name,
                store = args.store.store.display()
            )
        })?;
    let annotations = BTreeMap::from([
        (RUNTIME_ANNOTATION.to_string(), runtime.name.to_string()),
        (HANDLER_ANNOTATION.to_string(), handler.to_string()),
    ]);
    let image = store.build_on(&base, &code_layer(code), &annotations, KeepAs::Tag(tag))?;
    eprintln!(
        "wisp: built {tag} on {} ({} layer(s), {})",
        runtime.image,
        image.manifest().layers().len(),
        human_size(image.size())
    );
    println!("{}", image.digest());
    Ok(ExitCode::SUCCESS)
}

fn import(args: ImportArgs) -> Result<ExitCode> {
    let tag = args.tag.as_deref().map(Tag::parse).transpose()?;
    let store = open(&args.store)?;
    let imported = oci::import(&store, &args.path, tag.as_ref())
        .with_context(|| format!("importing {}", args.path.display()))?;
    for i in imported {
        let name = i
            .tag
            .map_or_else(|| "<untagged>".to_string(), |t| t.to_string());
        if i.converted {
            eprintln!(
                "wisp: imported {name}, converted from the plain OCI image {}",
                i.source_digest
            );
        } else {
            eprintln!("wisp: imported {name}");
        }
        println!("{}", i.digest);
    }
    Ok(ExitCode::SUCCESS)
}

fn export(args: ExportArgs) -> Result<ExitCode> {
    let store = open(&args.store)?;
    let out = oci::export(&store, &args.reference, &args.output)
        .with_context(|| format!("exporting {}", args.reference))?;
    eprintln!(
        "wisp: exported {} to {} ({} blobs, {})",
        out.tag
            .map_or_else(|| out.digest.to_string(), |t| t.to_string()),
        args.output.display(),
        out.blobs,
        human_size(out.bytes)
    );
    Ok(ExitCode::SUCCESS)
}

/// A registry client with the environment's credentials and plain-HTTP
/// registries, and a runtime to drive it.
fn registry(args: &RegistryArgs) -> Result<(Registry, tokio::runtime::Runtime)> {
    let mut options = RegistryOptions::from_env();
    options.plain_http |= args.plain_http;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok((Registry::new(options), runtime))
}

fn pull(args: PullArgs) -> Result<ExitCode> {
    let reference = RegistryRef::parse(&args.reference)?;
    let store = open(&args.store)?;
    let (registry, runtime) = registry(&args.registry)?;
    let pulled = runtime
        .block_on(registry.pull(&store, &reference))
        .with_context(|| format!("pulling {reference}"))?;
    let name = pulled
        .tag
        .map_or_else(|| "<untagged>".to_string(), |t| t.to_string());
    if pulled.already_stored {
        eprintln!("wisp: {name} is up to date");
    } else {
        let resumed = match (pulled.resumed_blobs, pulled.resumed_bytes) {
            (0, 0) => String::new(),
            (blobs, bytes) => format!(
                "; {blobs} blob(s) and {} of a partial one kept from an interrupted pull",
                human_size(bytes)
            ),
        };
        let converted = if pulled.converted {
            format!(
                ", converted from the plain OCI image {}",
                pulled.source_digest
            )
        } else {
            String::new()
        };
        eprintln!(
            "wisp: pulled {name} ({} blob(s), {}{resumed}{converted})",
            pulled.fetched_blobs,
            human_size(pulled.fetched_bytes)
        );
    }
    println!("{}", pulled.digest);
    Ok(ExitCode::SUCCESS)
}

fn push(args: PushArgs) -> Result<ExitCode> {
    let target = args.target.as_deref().unwrap_or(&args.source);
    let target = RegistryRef::parse_explicit(target)?;
    let store = open(&args.store)?;
    let (registry, runtime) = registry(&args.registry)?;
    let pushed = runtime
        .block_on(registry.push(&store, &args.source, &target))
        .with_context(|| format!("pushing {} to {target}", args.source))?;
    eprintln!(
        "wisp: pushed {target} ({} blob(s), {}; {} already there)",
        pushed.blobs_pushed,
        human_size(pushed.bytes_pushed),
        pushed.blobs_present
    );
    println!("{}", pushed.digest);
    Ok(ExitCode::SUCCESS)
}

fn ls(args: StoreArg) -> Result<ExitCode> {
    let store = open(&args)?;
    let rows = store.list()?;
    println!(
        "{:<32} {:<12} {:>10} {:>6} {:>10}  {:<16} STATUS",
        "REF", "DIGEST", "SIZE", "LAYERS", "LAST USED", "PINNED BY"
    );
    let mut bad = 0;
    for row in &rows {
        let pinned = if row.pinned_by.is_empty() {
            "-".to_string()
        } else {
            row.pinned_by.join(",")
        };
        let status = match &row.problem {
            None => "ok".to_string(),
            Some(p) => {
                bad += 1;
                format!("BROKEN: {p}")
            }
        };
        println!(
            "{:<32} {:<12} {:>10} {:>6} {:>10}  {:<16} {status}",
            row.tag
                .as_ref()
                .map_or_else(|| "<none>".to_string(), Tag::to_string),
            row.digest.short(),
            human_size(row.size),
            row.layers,
            ago(row.last_used),
            pinned
        );
    }
    if bad > 0 {
        eprintln!(
            "error: {bad} image(s) are broken (corrupt or missing blobs, or file layers wisp refuses): re-import or remove them"
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn rm(args: RmArgs) -> Result<ExitCode> {
    let store = open(&args.store)?;
    let removed = store.remove(&args.reference)?;
    eprintln!(
        "wisp: removed {} ({} blobs, {} freed)",
        removed.references.join(", "),
        removed.blobs,
        human_size(removed.bytes)
    );
    Ok(ExitCode::SUCCESS)
}

fn collect(args: GcArgs) -> Result<ExitCode> {
    let store = open(&args.store)?;
    let options = GcOptions {
        max_size: args.max_size,
        current_key: Some(Compiler::new(None)?.artifact_key().clone()),
    };
    let report = gc::collect(&store, &options)?;
    for image in &report.evicted_images {
        println!("evicted image {image}");
    }
    if report.evicted_artifacts > 0 {
        println!("evicted {} compiled artifact(s)", report.evicted_artifacts);
    }
    for (digest, size) in &report.removed {
        println!("removed {digest} ({})", human_size(*size));
    }
    for problem in &report.problems {
        eprintln!("warning: {problem}");
    }
    println!(
        "freed {} ({} blobs); the store holds {}",
        human_size(report.freed()),
        report.removed.len(),
        human_size(report.size_after)
    );
    if report.over_budget {
        eprintln!(
            "warning: the images deployed functions use take {}, more than --max-size {}",
            human_size(report.size_after),
            human_size(args.max_size.unwrap_or(0))
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_for_people() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(10 << 20), "10.0 MiB");
        assert_eq!(ago(None), "-");
        let t = SystemTime::now() - std::time::Duration::from_secs(7200);
        assert_eq!(ago(Some(t)), "2h ago");
    }
}
