//! Builds the BPF programs (ebpf/) with nightly + build-std and bpf-linker, into OUT_DIR, where
//! src/loader.rs embeds them. Run scripts/setup once first: it provides the pinned nightly
//! (ebpf/NIGHTLY) and bpf-linker.
fn main() {
    let package = aya_build::Package {
        name: "probectl-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf"),
        ..Default::default()
    };
    // The nightly is pinned (ebpf/NIGHTLY: its name, then rustc's commit hash); scripts/setup
    // makes sure a toolchain of that name is that rustc.
    let pin = include_str!("../ebpf/NIGHTLY");
    let toolchain = pin.split_whitespace().next().unwrap_or("nightly");
    println!("cargo:rerun-if-changed=../ebpf/NIGHTLY");
    if let Err(error) = aya_build::build_ebpf([package], aya_build::Toolchain::Custom(toolchain)) {
        panic!("building the BPF programs failed ({error:#}); did scripts/setup run?");
    }
    println!("cargo:rerun-if-changed=../common/src");
}
