//! `--push`, `-o type=image,push=true` and `-o type=registry`: the written image sent to
//! each name's registry (blobs the registry has are skipped), reported as events.

use std::time::Instant;

use oci_spec::image::Descriptor;

use crate::error::SetupError;
use crate::event::Event;
use crate::registry::Registry;
use crate::step::StepContext;

/// Pushes `manifest` to every name; with `insecure`, their hosts speak plain http.
pub(super) fn push(
    cx: &StepContext<'_>,
    manifest: &Descriptor,
    names: &[String],
    insecure: bool,
    on_event: &mut dyn FnMut(Event),
) -> Result<(), SetupError> {
    let own;
    let registry: &Registry = if insecure {
        let mut opts = cx.opts.registry.clone();
        for n in names {
            let r = crate::registry::parse_reference(n)?;
            opts.insecure.push(r.registry().to_string());
        }
        own = Registry::new(opts)?;
        &own
    } else {
        cx.registry()?
    };
    for name in names {
        let started = Instant::now();
        let pushed = registry.push(&cx.images, manifest, name, &mut |t| {
            on_event(Event::Transfer(t))
        })?;
        on_event(Event::pushed(pushed, started.elapsed().as_secs_f64()));
    }
    Ok(())
}
