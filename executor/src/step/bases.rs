//! The base images of a build: each reference resolved once per platform (a named
//! context, the local store), fetched from its registry first when the store lacks it
//! — or holds it for another platform — and always with `--pull`.

use std::time::Instant;

use super::StepContext;
use crate::error::StepError;
use crate::event::Event;
use crate::image::resolve::{BaseImages, ResolveError};
use crate::image::state::StageState;
use crate::plan::Platform;
use crate::registry::{Registry, RegistryError};

impl StepContext<'_> {
    /// The platform of what is not a stage's own FROM (COPY --from=IMAGE, mounts): the
    /// build's `--platform`, else this machine's.
    pub(crate) fn target_platform(&self) -> Platform {
        self.opts.platform.clone().unwrap_or_else(Platform::host)
    }

    pub(super) fn base_images(&self, platform: &Platform) -> BaseImages<'_> {
        BaseImages {
            snapshots: &self.snapshots,
            images: &self.images,
            named: &self.opts.named_contexts,
            root: &self.opts.root,
            platform: platform.clone(),
            commit: self.commit_options(),
        }
    }

    /// A base image for `platform`, resolved once per build; its import's `warnings` go
    /// to the first caller only.
    pub(crate) fn base(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> Result<StageState, ResolveError> {
        let key = format!("{reference}\n{platform}");
        if let Some(s) = self.bases().get(&key) {
            return Ok(s.clone());
        }
        let mut st = self.base_images(platform).resolve(reference)?;
        let warnings = std::mem::take(&mut st.warnings);
        self.bases().insert(key, st.clone());
        st.warnings = warnings;
        Ok(st)
    }

    /// The registry client (made on first use: it starts a small runtime).
    pub(crate) fn registry(&self) -> Result<&Registry, RegistryError> {
        if let Some(r) = self.registry.get() {
            return Ok(r);
        }
        let made = Registry::new(self.opts.registry.clone())?.cancelled_by(self.cancel.clone());
        Ok(self.registry.get_or_init(|| made))
    }

    /// Fetches base image `reference` for `platform` from its registry when the store
    /// lacks it or holds it for another platform (always, with `--pull`); named contexts
    /// that are directories or layouts are never fetched.
    pub(crate) fn fetch_base(
        &self,
        reference: &str,
        platform: &Platform,
        on_event: &mut dyn FnMut(Event),
    ) -> Result<(), StepError> {
        let Some(source) = self.base_images(platform).registry_source(reference) else {
            return Ok(());
        };
        if self
            .bases()
            .contains_key(&format!("{reference}\n{platform}"))
        {
            return Ok(());
        }
        if !self.opts.pull {
            if let Some(desc) = self.images.resolve(&source)? {
                let stored = self.images.load(&desc)?;
                let c = &stored.config;
                if c.os == platform.os && c.architecture == platform.architecture {
                    return Ok(());
                }
            }
        }
        let started = Instant::now();
        let pulled = self
            .registry()?
            .pull(&source, platform, &self.images, &mut |t| {
                on_event(Event::Transfer(t))
            })?;
        on_event(Event::pulled(pulled, started.elapsed().as_secs_f64()));
        Ok(())
    }
}
