//! Loads greha's eBPF object, attaches its programs, pins its maps, and takes
//! all of it down again. The one place that talks to aya for the datapath.
use std::{
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result, anyhow, bail};
use aya::{
    Ebpf,
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use greha_common::names;
use tracing::{info, warn};

use crate::bpffs;

/// The eBPF object built by `build.rs` (empty when built with AYA_BUILD_SKIP).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/greha"));

/// How an XDP program runs on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver, before an skb exists.
    Native,
    /// In the core stack, for drivers without XDP support.
    Generic,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
        })
    }
}

/// One attachment of the counting program.
#[derive(Debug)]
pub struct Attachment {
    pub iface: String,
    pub mode: AttachMode,
    link: XdpLinkId,
}

/// greha's loaded datapath. Dropping it detaches every program; pinned maps
/// are removed by [`Datapath::close`] unless the caller keeps them.
pub struct Datapath {
    ebpf: Ebpf,
    pin_dir: PathBuf,
    pinned: Vec<PathBuf>,
    attachments: Vec<Attachment>,
}

impl Datapath {
    /// Loads the object and pins its maps under `pin_dir`.
    pub fn load(pin_dir: &Path) -> Result<Self> {
        if OBJECT.is_empty() {
            bail!("this greha binary was built with AYA_BUILD_SKIP=1 and has no eBPF datapath");
        }
        let pin_dir = bpffs::prepare_pin_dir(pin_dir)?;
        let mut ebpf = Ebpf::load(OBJECT).context(
            "loading the eBPF object failed (a kernel with BPF and BTF, Linux 6.6 or newer, is required)",
        )?;
        let prog: &mut Xdp = program(&mut ebpf, names::PROG_COUNT)?;
        prog.load()
            .with_context(|| format!("the kernel refused program {}", names::PROG_COUNT))?;

        let mut pinned = Vec::new();
        for &name in names::PINNED_MAPS {
            let path = pin_dir.join(name);
            if bpffs::remove_pin(&path)? {
                warn!(pin = %path.display(), "removed a pin left behind by an earlier run");
            }
            let map = ebpf
                .map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the eBPF object"))?;
            map.pin(&path)
                .with_context(|| format!("cannot pin map {name} at {}", path.display()))?;
            pinned.push(path);
        }
        Ok(Self {
            ebpf,
            pin_dir,
            pinned,
            attachments: Vec::new(),
        })
    }

    /// Attaches the counting program to `iface`, natively if the driver
    /// can, in generic mode otherwise.
    pub fn attach_counter(&mut self, iface: &str) -> Result<&Attachment> {
        if self.attachments.iter().any(|a| a.iface == iface) {
            bail!("interface {iface} is listed twice");
        }
        let prog: &mut Xdp = program(&mut self.ebpf, names::PROG_COUNT)?;
        let (link, mode) = match prog.attach(iface, XdpMode::Driver) {
            Ok(link) => (link, AttachMode::Native),
            Err(aya::programs::ProgramError::UnknownInterface { .. }) => {
                bail!("interface {iface} does not exist")
            }
            Err(native) => {
                let link = prog.attach(iface, XdpMode::Skb).with_context(|| {
                    format!("cannot attach XDP to {iface} (native mode failed too: {native})")
                })?;
                (link, AttachMode::Generic)
            }
        };
        self.attachments.push(Attachment {
            iface: iface.to_owned(),
            mode,
            link,
        });
        Ok(self.attachments.last().expect("just pushed"))
    }

    /// Detaches every program and, unless `keep_pins`, removes the pins.
    pub fn close(mut self, keep_pins: bool) -> Result<()> {
        let prog: &mut Xdp = program(&mut self.ebpf, names::PROG_COUNT)?;
        for Attachment { iface, link, .. } in self.attachments.drain(..) {
            prog.detach(link)
                .with_context(|| format!("cannot detach from {iface}"))?;
            info!(iface, program = names::PROG_COUNT, "detached");
        }
        if !keep_pins {
            for path in &self.pinned {
                bpffs::remove_pin(path)?;
            }
            bpffs::remove_dir_if_empty(&self.pin_dir);
        }
        Ok(())
    }
}

fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the eBPF object"))?;
    prog.try_into()
        .with_context(|| format!("program {name} has an unexpected type"))
}
