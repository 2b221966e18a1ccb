//! Generates the gRPC health client (`proto/health.proto`) the agent's gRPC probes call.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/health.proto");
    tonic_prost_build::configure().build_server(false).build_client(true).compile_protos(&["proto/health.proto"], &["proto"])?;
    Ok(())
}
