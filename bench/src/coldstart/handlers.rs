//! Python and JavaScript handlers (docs/RUNTIMES.md) in the benchmark: one
//! JSON transform on each runtime, deployed as code on the runtime images
//! `scripts/build-runtimes` makes, measured cold and warm through the
//! daemon, booted fresh without the snapshot at the first read, and run by
//! the interpreter a user would otherwise start per invocation (`python3`,
//! `node`).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bytes::Bytes;
use serde_json::{json, Value};
use wisp::compile::Compiler;
use wisp::runtimes::local::LocalHandler;
use wisp_vmm::{BufferIo, Outcome, Vm, VmConfig};

use super::daemon::{Function, HandlerCode};
use super::process::{find_program, ProcessRun};
use super::report::PYTHON_PROCESS;
use super::series::{measure, Series, Start};
use super::Skipped;

/// Guest memory of a handler's VM: the daemon's default.
pub const HANDLER_MIB: u32 = 128;
/// Items in the event: about 0.8 KB of JSON, a small API request.
const ITEMS: usize = 20;

/// A language the benchmark measures.
struct Language {
    /// Its rows' function label.
    label: &'static str,
    /// wisp's runtime.
    runtime: &'static str,
    /// `MODULE.FUNCTION`.
    handler: &'static str,
    /// The handler's code: (file name, source).
    code: (&'static str, &'static str),
    /// The interpreter run per invocation, and its driver (in `native/`):
    /// program, file name, source.
    native: (&'static str, &'static str, &'static str),
    /// That alternative's row.
    scenario: &'static str,
    /// The runtime image's OCI layout in `scripts/build-runtimes`' output.
    layout: &'static str,
    /// How the runtime encodes the handler's result.
    encoding: Encoding,
}

/// How a runtime writes a result that is not a string: as its JSON
/// library does by default.
#[derive(Clone, Copy)]
enum Encoding {
    /// Python's `json.dumps`: `", "` and `": "` between items.
    Python,
    /// `JSON.stringify`: compact.
    JavaScript,
}

const LANGUAGES: [Language; 2] = [
    Language {
        label: "python",
        runtime: "python3.12",
        handler: "app.handler",
        code: ("app.py", include_str!("../../handlers/python/app.py")),
        native: (
            "python3",
            "python.py",
            include_str!("../../handlers/native/python.py"),
        ),
        scenario: PYTHON_PROCESS,
        layout: "python3.12.oci",
        encoding: Encoding::Python,
    },
    Language {
        label: "javascript",
        runtime: "javascript",
        handler: "index.handler",
        code: (
            "index.mjs",
            include_str!("../../handlers/javascript/index.mjs"),
        ),
        native: (
            "node",
            "node.mjs",
            include_str!("../../handlers/native/node.mjs"),
        ),
        scenario: "node process",
        layout: "javascript.oci",
        encoding: Encoding::JavaScript,
    },
];

/// Imports the runtime images from `runtimes` (`scripts/build-runtimes`'
/// output) into the daemon's image store `store` with `wisp`, and returns
/// the handler functions whose runtime is there; the others go to
/// `skipped`. Their code is written under `out`.
pub fn functions(
    wisp: &Path,
    runtimes: &Path,
    store: &Path,
    out: &Path,
    skipped: &mut Skipped,
) -> Result<Vec<Function>> {
    let event = event();
    let mut functions = Vec::new();
    for language in &LANGUAGES {
        let layout = runtimes.join(language.layout);
        if !layout.join("index.json").is_file() {
            skipped.push((
                language.label.to_string(),
                format!(
                    "no runtime image at {} (scripts/build-runtimes makes it)",
                    layout.display()
                ),
            ));
            continue;
        }
        let status = std::process::Command::new(wisp)
            .args(["image", "import"])
            .arg(&layout)
            .arg("--store")
            .arg(store)
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("{} image import", wisp.display()))?;
        anyhow::ensure!(
            status.success(),
            "importing {} failed: {status}",
            layout.display()
        );
        let dir = write_sources(out, language)?;
        functions.push(Function {
            label: language.label.into(),
            module: Vec::new(),
            handler: Some(HandlerCode {
                runtime: language.runtime.into(),
                handler: language.handler.into(),
                code_tar: wisp::runtimes::code_tar(&dir)?,
                dir,
            }),
            input: Bytes::from(serde_json::to_vec(&event)?),
            expected: Bytes::from(expected(&event, language.encoding)),
            memory_mib: HANDLER_MIB,
            max_runs: usize::MAX,
        });
    }
    Ok(functions)
}

/// Writes `language`'s code into `out/handlers/<label>/` and its native
/// driver into `out/handlers/native/`, which imports it from there (as in
/// `bench/handlers/`); the code's directory.
fn write_sources(out: &Path, language: &Language) -> Result<PathBuf> {
    let handlers = out.join("handlers");
    let dir = handlers.join(language.label);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(language.code.0), language.code.1)?;
    let native = handlers.join("native");
    std::fs::create_dir_all(&native)?;
    std::fs::write(native.join(language.native.1), language.native.2)?;
    Ok(dir)
}

/// The event: items with names and integer prices, some equal (so the
/// sort's stability shows).
fn event() -> Value {
    let items: Vec<Value> = (0..ITEMS)
        .map(|i| json!({"name": format!("item-{i:03}"), "price": (i * 7919) % 1000}))
        .collect();
    json!({ "items": items })
}

/// What the handler answers to `event`, encoded as the runtime does.
fn expected(event: &Value, encoding: Encoding) -> Vec<u8> {
    let mut items = event["items"].as_array().cloned().unwrap_or_default();
    items.sort_by_key(|item| item["price"].as_u64());
    let total: u64 = items.iter().filter_map(|i| i["price"].as_u64()).sum();
    // serde_json's maps are sorted by key: `count`, `items`, `total` and
    // `name`, `price` are also the order the handlers write them in.
    let result =
        json!({"count": items.len(), "items": &items[..items.len().min(10)], "total": total});
    match encoding {
        Encoding::JavaScript => serde_json::to_vec(&result).expect("serialisable"),
        Encoding::Python => {
            let mut out = Vec::new();
            let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
            serde::Serialize::serialize(&result, &mut ser).expect("serialisable");
            out
        }
    }
}

/// `json.dumps`' default separators.
struct PythonFormatter;

impl serde_json::ser::Formatter for PythonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.begin_array_value(writer, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// The interpreter per invocation (`python3`, `node`), if installed.
pub fn native(f: &Function, code: &HandlerCode) -> Result<ProcessRun, String> {
    let language = LANGUAGES
        .iter()
        .find(|l| l.label == f.label)
        .ok_or("not a handler function")?;
    let (program, driver, _) = language.native;
    let program = find_program(program).ok_or(format!("no `{program}` on PATH"))?;
    let driver = code.dir.join("..").join("native").join(driver);
    let driver = driver.to_string_lossy().into_owned();
    let mut run = ProcessRun::new(language.scenario, program, &[&driver]);
    run.expected = f.expected.to_vec();
    Ok(run)
}

/// The handler booted fresh for every invocation, without the snapshot at
/// the first read: interpreter start-up and the handler's import in every
/// sample, the cost the snapshot saves. The interpreter's compiled
/// artifact comes from the daemon's store (`store`), where its deploy put
/// it.
pub fn fresh_boot(f: &Function, code: &HandlerCode, store: &Path, runs: usize) -> Result<Series> {
    let handler = LocalHandler::open(&code.runtime, &code.handler, &code.dir, store, &[])?;
    let artifact = Compiler::new(Some(store.to_owned()))?
        .load_or_compile(&handler.module()?)
        .with_context(|| format!("compiling the {} runtime", code.runtime))?;
    let mem_size = u64::from(f.memory_mib) << 20;
    let config = VmConfig {
        mem_size,
        files: handler.files()?,
        ..VmConfig::default()
    };
    Ok(measure(
        "wisp fresh boot",
        &f.label,
        runs.min(f.max_runs),
        || {
            let mut stdin = handler.context_line(mem_size, None);
            stdin.extend_from_slice(&f.input);
            let mut vm = Vm::boot(config.clone(), &artifact).map_err(|e| format!("boot: {e}"))?;
            let mut io = BufferIo::with_stdin(&stdin[..]);
            let outcome = vm.invoke(&handler.boot, &mut io);
            drop(vm);
            match outcome.map_err(|e| format!("invoke: {e}"))? {
                Outcome::Exited(0) if io.stdout == f.expected => Ok(Start::None),
                other => Err(format!(
                    "ended with {other:?}, printed {:?}",
                    String::from_utf8_lossy(&io.stdout[..io.stdout.len().min(80)])
                )),
            }
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expected_answers_are_encoded_as_each_runtime_does() {
        let event = json!({"items": [
            {"name": "b", "price": 2}, {"name": "a", "price": 1}, {"name": "c", "price": 1}
        ]});
        assert_eq!(
            String::from_utf8(expected(&event, Encoding::JavaScript)).unwrap(),
            r#"{"count":3,"items":[{"name":"a","price":1},{"name":"c","price":1},{"name":"b","price":2}],"total":4}"#
        );
        assert_eq!(
            String::from_utf8(expected(&event, Encoding::Python)).unwrap(),
            r#"{"count": 3, "items": [{"name": "a", "price": 1}, {"name": "c", "price": 1}, {"name": "b", "price": 2}], "total": 4}"#
        );
    }
}
