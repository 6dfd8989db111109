//! The ready point — where the agent reports `Ready` and waits for its
//! request, the state a snapshot captures.
//!
//! By default it comes right after instantiation, and `_start` runs per
//! request. With [`ReadyAt::FirstRead`] in the boot record the boot's own
//! request starts `_start`, and the module's first read of stdin reports
//! `Ready` again: the program's set-up (an interpreter starting, importing
//! a handler) is then part of the snapshot, and every restore continues
//! inside that read with its own request's clock, entropy and stdin.

use wisp_abi::boot::ReadyAt;
use wisp_abi::msg::{self, Kind};

use crate::channel::Incoming;
use crate::rt;
use crate::wasi::{Ctx, Invocation};

/// Reports `Ready`, waits for the request that must follow (and the stdin
/// that may come with it) and installs it.
pub fn report(ctx: &mut Ctx, tsc_khz: u64) {
    ctx.channel.send(Kind::Ready, &[]);
    ctx.stdio.notified();
    ctx.channel.notify();
    receive_request(ctx, tsc_khz);
}

/// After the boot's request: arms the second ready point if the boot
/// record asks for it.
pub fn arm(ctx: &mut Ctx, ready_at: ReadyAt, tsc_khz: u64) {
    if ready_at == ReadyAt::FirstRead {
        ctx.ready_at_read = Some(tsc_khz);
    }
}

/// Called before the module reads stdin: at the first read of a module
/// booted with [`ReadyAt::FirstRead`], this is the ready point.
pub fn before_stdin(ctx: &mut Ctx) {
    if let Some(tsc_khz) = ctx.ready_at_read.take() {
        report(ctx, tsc_khz);
    }
}

fn receive_request(ctx: &mut Ctx, tsc_khz: u64) {
    let mut invocation = None;
    let Ctx { channel, stdio, .. } = &mut *ctx;
    while let Some(got) = channel.recv(|m| match m {
        Incoming::Request(payload) => match msg::decode_request(payload) {
            Ok(req) => Some(Invocation::from(&req)),
            Err(_) => rt::fatal("malformed request"),
        },
        other => {
            stdio.accept(other);
            None
        }
    }) {
        invocation = got.or(invocation);
    }
    match invocation {
        Some(inv) => ctx.begin(inv, tsc_khz),
        None => rt::fatal("no request after Ready"),
    }
}
