//! Generates the Feast wire types and the gRPC service from `proto/` with a
//! vendored protoc, so a build needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // prost-build finds protoc through this variable. A build script is a
    // single thread, so nothing can read the environment while it changes.
    unsafe { std::env::set_var("PROTOC", protoc) };
    let well_known = protoc_bin_vendored::include_path()?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .file_descriptor_set_path(out.join("larder_descriptor.bin"))
        .compile_protos(
            &[
                "proto/feast/types/Value.proto",
                "proto/feast/types/EntityKey.proto",
                "proto/feast/serving/ServingService.proto",
                "proto/larder/v1/push.proto",
            ],
            &[
                "proto",
                well_known.to_str().ok_or("non-UTF-8 include path")?,
            ],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
