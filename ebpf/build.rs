//! Sets `bpf_target_arch` when the crate is built or linted on its own (scripts/test's clippy):
//! the host's architecture, or `AYA_BPF_TARGET_ARCH`. core/build.rs (aya-build) passes the
//! target's architecture itself, and then this does nothing.
fn main() {
    if let Err(error) = aya_build::emit_bpf_target_arch_cfg() {
        panic!("setting bpf_target_arch failed: {error:#}");
    }
}
