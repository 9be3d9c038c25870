//! Compiles every `.proto` under `proto/` with the pure-Rust `protox` compiler (no system
//! `protoc`), generates the tonic/prost code, and writes the encoded `FileDescriptorSet` to
//! `$OUT_DIR/clawdo_descriptor.bin` for the server reflection service.

use std::error::Error;
use std::path::{Path, PathBuf};

use protox::prost::Message as _;

/// Root of the proto tree; also the only include path.
const PROTO_ROOT: &str = "proto";

fn main() -> Result<(), Box<dyn Error>> {
    // Cargo scans a directory recursively, so this covers added and edited files.
    println!("cargo:rerun-if-changed={PROTO_ROOT}");

    let mut protos = Vec::new();
    collect_protos(Path::new(PROTO_ROOT), &mut protos)?;
    protos.sort();

    let fds = protox::compile(&protos, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("clawdo_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .emit_rerun_if_changed(false)
        // Keeps `Instance` (a variant of the watch stream's `oneof`) small.
        .boxed(".clawdo.v1.Instance.upcoming_action")
        .compile_fds(fds)?;
    Ok(())
}

/// Appends every `.proto` file below `dir` to `out`, depth first.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
