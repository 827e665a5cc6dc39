//! What a build is asked to do: [`BuildOptions`], with defaults for everything but the
//! context and the Dockerfile, and a builder so embedders set only what they need.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cache::transfer::CacheSpec;
use crate::dockerfile::instructions::NetworkMode;
use crate::export::Output;
use crate::mounts::ssh::SshSource;
use crate::mounts::SecretSource;
use crate::plan::Platform;
use crate::registry::RegistryOptions;
use crate::sandbox::userns::IdMapping;
use crate::snapshots::{BackendChoice, LayerCompression};

/// A named context (`--build-context NAME=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory (for COPY --from / bind mounts, or as a base filesystem).
    Dir(PathBuf),
    /// An OCI image layout and the tag (or only image) in it; with `digest`
    /// (`PATH@sha256:…`), the manifest or index of that digest (an index gives this
    /// platform's manifest), which must match the tag's when both are given.
    OciLayout {
        path: PathBuf,
        tag: Option<String>,
        digest: Option<String>,
    },
    /// Another image reference (`docker-image://REF`): the local store, else its registry.
    Image(String),
}

/// Everything a build needs.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The kiln root: image store, snapshots, caches.
    pub root: PathBuf,
    pub context: PathBuf,
    /// The Dockerfile's bytes and the name shown in errors.
    pub dockerfile: Vec<u8>,
    pub dockerfile_name: String,
    /// Where the Dockerfile is on disk, if it is (for `<Dockerfile>.dockerignore`).
    pub dockerfile_path: Option<PathBuf>,
    pub target: Option<String>,
    pub build_args: BTreeMap<String, String>,
    /// `--label`s, added to the target's config.
    pub labels: BTreeMap<String, String>,
    pub tags: Vec<String>,
    pub secrets: Vec<(String, SecretSource)>,
    /// ssh id → agent socket or key files.
    pub ssh: BTreeMap<String, SshSource>,
    pub named_contexts: BTreeMap<String, NamedContext>,
    pub compression: LayerCompression,
    pub snapshotter: BackendChoice,
    pub source_date_epoch: Option<u64>,
    /// How ids map in the namespace the build runs in.
    pub mapping: IdMapping,
    /// The program that acts as the sandbox's helper (the kiln binary).
    pub helper: PathBuf,
    pub outputs: Vec<Output>,
    /// `--allow` entitlements.
    pub allow: Entitlements,
    /// `--network`: the network of RUN steps that do not say (`RUN --network=…`).
    pub network: NetworkMode,
    /// `--add-host NAME:IP` entries in every RUN step's `/etc/hosts`.
    pub add_hosts: Vec<(String, String)>,
    pub platform: Option<Platform>,
    /// `--no-cache`: run every step (results are still recorded in the cache).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name or index) whose steps, and the steps of every
    /// stage built on or from them, are run instead of taken from the cache.
    pub no_cache_filter: Vec<String>,
    /// `-j`: how many stages build at once (`None`: the CPUs, at least 2).
    pub jobs: Option<usize>,
    /// `--pull`: base images are fetched from their registry even when the store has them.
    pub pull: bool,
    /// `--push`: every `-t` tag is pushed to its registry after the build.
    pub push: bool,
    /// Registries: credentials, `--insecure-registry`.
    pub registry: RegistryOptions,
    /// `--cache-to`: where the entries this build used are exported.
    pub cache_to: Vec<CacheSpec>,
    /// `--cache-from`: caches read into this root before the steps run.
    pub cache_from: Vec<CacheSpec>,
}

impl Default for BuildOptions {
    /// A build of `./Dockerfile` in `.`, into the default kiln root, with this program as
    /// the sandbox's helper and the mapping of the namespace the process is in.
    fn default() -> Self {
        BuildOptions {
            root: default_root(),
            context: PathBuf::from("."),
            dockerfile: Vec::new(),
            dockerfile_name: "Dockerfile".into(),
            dockerfile_path: None,
            target: None,
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            tags: Vec::new(),
            secrets: Vec::new(),
            ssh: BTreeMap::new(),
            named_contexts: BTreeMap::new(),
            compression: LayerCompression::default(),
            snapshotter: BackendChoice::default(),
            source_date_epoch: None,
            mapping: crate::sandbox::userns::build_namespace().unwrap_or(IdMapping::Root),
            helper: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("kiln")),
            outputs: Vec::new(),
            allow: Entitlements::default(),
            network: NetworkMode::Default,
            add_hosts: Vec::new(),
            platform: None,
            no_cache: false,
            no_cache_filter: Vec::new(),
            jobs: None,
            pull: false,
            push: false,
            registry: RegistryOptions::default(),
            cache_to: Vec::new(),
            cache_from: Vec::new(),
        }
    }
}

/// kiln's root when none is given (`--root` and `$KILN_ROOT` are the caller's to apply):
/// `/var/lib/kiln` for uid 0 of the initial user namespace without `$XDG_DATA_HOME`, else `$XDG_DATA_HOME/kiln`,
/// else `~/.local/share/kiln`.
pub fn default_root() -> PathBuf {
    let xdg = std::env::var_os("XDG_DATA_HOME");
    // uid 0 of the initial user namespace, privileged or not (root of a container).
    let root = rustix::process::geteuid().is_root()
        && kiln_snapshotter::idmap::in_initial_user_namespace();
    if root && xdg.is_none() {
        return PathBuf::from("/var/lib/kiln");
    }
    if let Some(x) = xdg {
        return Path::new(&x).join("kiln");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".local/share/kiln")
}

/// What `--allow` grants, as buildx names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Entitlements {
    /// `network.host`: `RUN --network=host`.
    pub network_host: bool,
    /// `security.insecure`: `RUN --security=insecure` keeps every capability the
    /// build's user namespace has (as rootless BuildKit grants it).
    pub security_insecure: bool,
}

/// An `--allow` value kiln does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown entitlement {0}")]
pub struct UnknownEntitlement(pub String);

impl Entitlements {
    /// Adds one `--allow` value (`network.host`, `security.insecure`).
    pub fn grant(&mut self, name: &str) -> Result<(), UnknownEntitlement> {
        match name {
            "network.host" => self.network_host = true,
            "security.insecure" => self.security_insecure = true,
            other => return Err(UnknownEntitlement(other.to_string())),
        }
        Ok(())
    }
}

impl BuildOptions {
    /// A builder for a build of `context` with the Dockerfile at `context/Dockerfile`
    /// (read when the builder is finished, unless [`BuildOptionsBuilder::dockerfile`]
    /// gives the bytes).
    pub fn builder(context: impl Into<PathBuf>) -> BuildOptionsBuilder {
        let context = context.into();
        BuildOptionsBuilder {
            opts: BuildOptions {
                dockerfile_path: Some(context.join("Dockerfile")),
                context,
                ..Default::default()
            },
            dockerfile_given: false,
        }
    }
}

/// Builds [`BuildOptions`] step by step: `BuildOptions::builder(dir).tag("app").build()?`.
#[derive(Debug, Clone)]
pub struct BuildOptionsBuilder {
    opts: BuildOptions,
    dockerfile_given: bool,
}

impl BuildOptionsBuilder {
    /// The Dockerfile's bytes, and the name errors show.
    pub fn dockerfile(mut self, name: impl Into<String>, bytes: impl Into<Vec<u8>>) -> Self {
        self.opts.dockerfile_name = name.into();
        self.opts.dockerfile = bytes.into();
        self.opts.dockerfile_path = None;
        self.dockerfile_given = true;
        self
    }
    /// A Dockerfile on disk (`-f`), read when the builder finishes.
    pub fn dockerfile_path(mut self, path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        self.opts.dockerfile_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "Dockerfile".into());
        self.opts.dockerfile_path = Some(path);
        self.dockerfile_given = false;
        self
    }
    pub fn root(mut self, root: impl Into<PathBuf>) -> Self {
        self.opts.root = root.into();
        self
    }
    pub fn target(mut self, stage: impl Into<String>) -> Self {
        self.opts.target = Some(stage.into());
        self
    }
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.opts.tags.push(tag.into());
        self
    }
    pub fn build_arg(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.opts.build_args.insert(key.into(), value.into());
        self
    }
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.opts.labels.insert(key.into(), value.into());
        self
    }
    pub fn secret(mut self, id: impl Into<String>, source: SecretSource) -> Self {
        self.opts.secrets.push((id.into(), source));
        self
    }
    pub fn ssh(mut self, id: impl Into<String>, source: SshSource) -> Self {
        self.opts.ssh.insert(id.into(), source);
        self
    }
    pub fn named_context(mut self, name: impl Into<String>, context: NamedContext) -> Self {
        self.opts.named_contexts.insert(name.into(), context);
        self
    }
    pub fn compression(mut self, compression: LayerCompression) -> Self {
        self.opts.compression = compression;
        self
    }
    pub fn snapshotter(mut self, choice: BackendChoice) -> Self {
        self.opts.snapshotter = choice;
        self
    }
    pub fn source_date_epoch(mut self, epoch: u64) -> Self {
        self.opts.source_date_epoch = Some(epoch);
        self
    }
    pub fn mapping(mut self, mapping: IdMapping) -> Self {
        self.opts.mapping = mapping;
        self
    }
    pub fn helper(mut self, program: impl Into<PathBuf>) -> Self {
        self.opts.helper = program.into();
        self
    }
    pub fn output(mut self, output: Output) -> Self {
        self.opts.outputs.push(output);
        self
    }
    pub fn platform(mut self, platform: Platform) -> Self {
        self.opts.platform = Some(platform);
        self
    }
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.opts.jobs = Some(jobs);
        self
    }
    pub fn no_cache(mut self, no_cache: bool) -> Self {
        self.opts.no_cache = no_cache;
        self
    }
    pub fn pull(mut self, pull: bool) -> Self {
        self.opts.pull = pull;
        self
    }
    pub fn push(mut self, push: bool) -> Self {
        self.opts.push = push;
        self
    }
    pub fn cache_to(mut self, spec: CacheSpec) -> Self {
        self.opts.cache_to.push(spec);
        self
    }
    pub fn cache_from(mut self, spec: CacheSpec) -> Self {
        self.opts.cache_from.push(spec);
        self
    }
    pub fn registry(mut self, registry: RegistryOptions) -> Self {
        self.opts.registry = registry;
        self
    }
    /// The options; reads the Dockerfile from disk unless its bytes were given.
    pub fn build(mut self) -> std::io::Result<BuildOptions> {
        if !self.dockerfile_given {
            if let Some(p) = &self.opts.dockerfile_path {
                self.opts.dockerfile = std::fs::read(p)?;
            }
        }
        Ok(self.opts)
    }
}
