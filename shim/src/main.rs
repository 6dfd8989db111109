//! `containerd-shim-wisp-v1`: the containerd runtime v2 shim of runtime
//! `io.containerd.wisp.v1`. containerd starts one per container; it runs
//! the container's wasm module (the process's args[0], a `.wasm` in the
//! image's root filesystem) with `wisp run` in a micro-VM, with the
//! container's args, env, bind mounts as preopened directories, stdio
//! FIFOs and exit code. See shim/README.md.

mod error;
mod service;
mod spec;

use std::sync::Arc;

use containerd_shim as shim;
use shim::synchronous::publisher::RemotePublisher;
use shim::{Config, DeleteResponse, ExitSignal, Flags, StartOpts};

use crate::service::{unmount, Service, KILLED};
use crate::spec::Spec;

/// The runtime name containerd maps to this binary's name.
const RUNTIME: &str = "io.containerd.wisp.v1";

/// The shim process: its bootstrap actions and its one task service.
struct WispShim {
    namespace: String,
    exit: Arc<ExitSignal>,
}

impl shim::Shim for WispShim {
    type T = Service;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        WispShim {
            namespace: args.namespace.clone(),
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// `start`: forks the long-lived shim serving this container (one
    /// shim per container, grouped by its id) and records its address in
    /// the bundle, for containerd to reconnect after a restart.
    fn start_shim(&mut self, opts: StartOpts) -> Result<String, shim::Error> {
        let grouping = opts.id.clone();
        let (_pid, address) = shim::spawn(opts, &grouping, Vec::new())?;
        shim::synchronous::util::write_address(&address)?;
        Ok(address)
    }

    /// `delete`: containerd's clean-up after a shim is gone (run in the
    /// bundle). The shim's `wisp run` children died with it
    /// (PR_SET_PDEATHSIG); what may be left is the rootfs mount.
    fn delete_shim(&mut self) -> Result<DeleteResponse, shim::Error> {
        let bundle = std::env::current_dir().map_err(|err| shim::Error::IoError {
            context: "finding the bundle".into(),
            err,
        })?;
        let rootfs = Spec::load(&bundle)
            .map(|s| s.rootfs(&bundle))
            .unwrap_or_else(|_| bundle.join("rootfs"));
        if let Err(e) = unmount(&rootfs) {
            log::warn!("{e}");
        }
        Ok(DeleteResponse {
            exit_status: KILLED,
            exited_at: shim::protos::protobuf::MessageField::some(
                shim::protos::protobuf::well_known_types::timestamp::Timestamp::now(),
            ),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Service {
        Service::new(
            self.namespace.clone(),
            Some(publisher),
            Arc::clone(&self.exit),
        )
    }
}

fn main() {
    shim::run::<WispShim>(RUNTIME, None);
}
