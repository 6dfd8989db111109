//! The WASI interface the agent provides to modules.
//!
//! The host checks a module's imports against this list before it compiles
//! it, so an unsupported import is a clear error on the host rather than a
//! failed instantiation inside the guest. The `all_imports` integration
//! test instantiates a module importing every one of them in a real VM.

/// The import module of WASI preview 1.
pub const MODULE: &str = "wasi_snapshot_preview1";

/// The optional export `() -> ()` the agent calls once after instantiation
/// and before reporting ready, so its effects are in every snapshot and every
/// invocation starts from them. Clocks and randomness read inside it are
/// those of boot time and are the same for every restore.
pub const INIT_EXPORT: &str = "wisp_init";

/// Every `wasi_snapshot_preview1` function the agent defines, sorted.
pub const FUNCTIONS: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "environ_get",
    "environ_sizes_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_dir_name",
    "fd_prestat_get",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "random_get",
    "sched_yield",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// Whether the agent provides the function `name` of import module `module`.
pub fn provides(module: &str, name: &str) -> bool {
    module == MODULE && FUNCTIONS.binary_search(&name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_sorted_and_complete() {
        assert!(
            FUNCTIONS.windows(2).all(|w| w[0] < w[1]),
            "FUNCTIONS must be sorted for binary_search"
        );
        // All 46 functions of the preview-1 snapshot.
        assert_eq!(FUNCTIONS.len(), 46);
        assert!(provides(MODULE, "fd_write"));
        assert!(!provides(MODULE, "fd_frobnicate"));
        assert!(!provides("env", "fd_write"));
    }
}
