//! Builds the BPF programs (ebpf/) with nightly + build-std and bpf-linker, into OUT_DIR, where
//! src/loader.rs embeds them. Run scripts/setup once first.
fn main() {
    let package = aya_build::Package {
        name: "probectl-ebpf",
        root_dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf"),
        ..Default::default()
    };
    if let Err(error) = aya_build::build_ebpf([package], aya_build::Toolchain::Nightly) {
        panic!("building the BPF programs failed ({error:#}); did scripts/setup run?");
    }
    println!("cargo:rerun-if-changed=../common/src");
}
