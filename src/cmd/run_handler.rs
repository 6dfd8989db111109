//! `wisp run --runtime R --handler MODULE.FUNCTION CODE`'s errors: what a
//! handler that did not load said (the handler itself is
//! [`wisp::runtimes::local::LocalHandler`]).

use wisp_vmm::Error as VmError;

/// `e` with the interpreter's words when the handler did not load (its
/// import raised, a syntax error, no such function): the bootstrap ended
/// before its first read, and what it wrote to stderr says why.
pub fn load_error(e: anyhow::Error) -> anyhow::Error {
    let stderr = e.chain().find_map(|c| match c.downcast_ref::<VmError>() {
        Some(VmError::EndedDuringInit { stderr, .. }) => Some(stderr.trim_end().to_string()),
        _ => None,
    });
    match stderr {
        Some(stderr) if !stderr.is_empty() => {
            e.context(format!("the handler did not load:\n{stderr}\n"))
        }
        _ => e,
    }
}
