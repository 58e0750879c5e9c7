//! `package`: writes the app as an OCI image layout, the way `spin registry push` lays it
//! out (without the network part): each component's Wasm as a
//! `application/vnd.wasm.content.layer.v1+wasm` layer, the locked app as a
//! `application/vnd.fermyon.spin.application.v1+config` layer, and an image config with
//! `os: wasip1`, `architecture: wasm`. Any OCI tool can push the folder (`oras`, `crane`,
//! `skopeo`). `up --from <folder>` runs it directly.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use indexmap::IndexMap;
use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, ImageConfigurationBuilder, ImageIndex, ImageIndexBuilder, ImageManifest,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, RootFsBuilder, Sha256Digest,
};
use sha2::Digest as _;

use spindapr_manifest::App;
use spindapr_manifest::locked::LockedApp;

/// Media type of a layer holding a component's Wasm.
pub const WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// Media type of the layer holding the locked app (JSON).
pub const LOCKED_APP_LAYER: &str = "application/vnd.fermyon.spin.application.v1+config";
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What was written.
#[derive(Debug)]
pub struct Packaged {
    /// The `sha256:` digest of the image manifest.
    pub manifest_digest: String,
    /// How many layers the image has: the distinct Wasm blobs plus the locked app.
    pub layers: usize,
}

fn sha256(bytes: &[u8]) -> anyhow::Result<Sha256Digest> {
    let hex = hex::encode(sha2::Sha256::digest(bytes));
    hex.parse().context("a sha256 digest in hex")
}

/// Writes `bytes` as a blob and returns its descriptor.
fn blob(out: &Path, media: MediaType, bytes: &[u8]) -> anyhow::Result<Descriptor> {
    let digest = sha256(bytes)?;
    let dir = out.join("blobs").join("sha256");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join(digest.digest()), bytes)?;
    Ok(DescriptorBuilder::default().media_type(media).size(bytes.len() as u64).digest(digest).build()?)
}

/// Writes `app` as an OCI image layout in `out` (created if missing), tagged `reference`.
pub fn package(app: &App, out: &Path, reference: &str) -> anyhow::Result<Packaged> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut layers = Vec::new();
    let mut digests = IndexMap::new();
    for c in app.components.values() {
        let bytes = std::fs::read(&c.source)
            .with_context(|| format!("component `{}`: cannot read {}; build it first", c.id, c.source.display()))?;
        let d = blob(out, MediaType::Other(WASM_LAYER.into()), &bytes)?;
        digests.insert(c.id.clone(), d.digest().to_string());
        if !layers.iter().any(|l: &Descriptor| l.digest() == d.digest()) {
            layers.push(d);
        }
    }
    let locked = serde_json::to_vec_pretty(&LockedApp::from_app(app, &digests)?)?;
    layers.push(blob(out, MediaType::Other(LOCKED_APP_LAYER.into()), &locked)?);

    let rootfs =
        RootFsBuilder::default().typ("layers").diff_ids(layers.iter().map(|l| l.digest().to_string()).collect::<Vec<_>>()).build()?;
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::Wasm)
        .os(Os::from("wasip1"))
        .rootfs(rootfs)
        .config(
            ConfigBuilder::default()
                .labels(
                    [("org.opencontainers.image.title".to_string(), app.name.clone())]
                        .into_iter()
                        .collect::<std::collections::HashMap<_, _>>(),
                )
                .build()?,
        )
        .build()?;
    let config = blob(out, MediaType::ImageConfig, config.to_string()?.as_bytes())?;
    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers.clone())
        .build()?;
    let mut mdesc = blob(out, MediaType::ImageManifest, manifest.to_string()?.as_bytes())?;
    mdesc.set_annotations(Some([(REF_NAME.to_string(), reference.to_string())].into_iter().collect()));
    let index =
        ImageIndexBuilder::default().schema_version(2u32).media_type(MediaType::ImageIndex).manifests(vec![mdesc.clone()]).build()?;
    std::fs::write(out.join("index.json"), index.to_string()?)?;
    std::fs::write(out.join("oci-layout"), serde_json::to_string(&OciLayoutBuilder::default().image_layout_version("1.0.0").build()?)?)?;
    Ok(Packaged { manifest_digest: mdesc.digest().to_string(), layers: layers.len() })
}

/// Whether `path` is an OCI image layout folder.
pub fn is_layout(path: &Path) -> bool {
    path.is_dir() && path.join("oci-layout").is_file()
}

fn blob_path(layout: &Path, digest: &str) -> anyhow::Result<PathBuf> {
    let hex = digest.strip_prefix("sha256:").with_context(|| format!("unsupported digest {digest}: only sha256"))?;
    Ok(layout.join("blobs").join("sha256").join(hex))
}

/// Reads a blob and checks it against its descriptor.
fn read_blob(layout: &Path, d: &Descriptor) -> anyhow::Result<Vec<u8>> {
    let path = blob_path(layout, d.digest().as_ref())?;
    let bytes = std::fs::read(&path).with_context(|| format!("missing blob {}", path.display()))?;
    if bytes.len() as u64 != d.size() || format!("sha256:{}", sha256(&bytes)?.digest()) != d.digest().to_string() {
        bail!("blob {} does not match its descriptor (size or digest)", d.digest());
    }
    Ok(bytes)
}

/// Loads an app from an OCI image layout written by `package` (or `spin registry push`'s
/// layout with the same media types): the Wasm layers are run from the blob files.
pub fn load_layout(layout: &Path) -> anyhow::Result<App> {
    let layout = std::path::absolute(layout)?;
    let index =
        ImageIndex::from_file(layout.join("index.json")).with_context(|| format!("{}: not an OCI image layout index", layout.display()))?;
    let mdesc = index.manifests().first().with_context(|| format!("{}: the index lists no manifest", layout.display()))?;
    let manifest = ImageManifest::from_reader(&read_blob(&layout, mdesc)?[..])?;
    let locked = manifest
        .layers()
        .iter()
        .find(|l| l.media_type().to_string() == LOCKED_APP_LAYER)
        .with_context(|| format!("{}: no {LOCKED_APP_LAYER} layer: not a Spin app", layout.display()))?;
    let locked: LockedApp = serde_json::from_slice(&read_blob(&layout, locked)?)
        .with_context(|| format!("{}: the locked app layer is not a Spin locked app this host reads", layout.display()))?;
    for l in manifest.layers() {
        read_blob(&layout, l)?;
    }
    let source_of = |digest: &str| blob_path(&layout, digest).map_err(|e| format!("{e:#}"));
    Ok(locked.into_app(layout.join("index.json"), layout.clone(), source_of)?)
}
