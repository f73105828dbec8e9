//! The BPF objects built from `proxy-ebpf`, embedded at compile time, and their loading.
//!
//! Owns which object holds which program and the load step (verifier included). Never attaches a
//! program anywhere; see [`crate::attach`].

use std::time::Duration;

use aya::{
    Ebpf, EbpfError,
    programs::{ProgramError, SchedClassifier, TestRun as _, TestRunOptions, Xdp},
};

/// One BPF object (one binary of `proxy-ebpf`), holding one program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgramObject {
    /// TC classifier for a pod's host-side veth (`proxy-ebpf/src/tc_pod.rs`).
    TcPod,
    /// XDP program for the node's uplink (`proxy-ebpf/src/xdp_uplink.rs`).
    XdpUplink,
}

impl ProgramObject {
    /// The name of the program inside the object (its function name in `proxy-ebpf`).
    pub const fn program_name(self) -> &'static str {
        match self {
            ProgramObject::TcPod => "tc_pod",
            ProgramObject::XdpUplink => "xdp_uplink",
        }
    }

    /// The ELF bytes of the object, as built by `build.rs`.
    pub fn elf(self) -> &'static [u8] {
        match self {
            ProgramObject::TcPod => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_pod"))
            }
            ProgramObject::XdpUplink => {
                aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_uplink"))
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("parsing the BPF object of {program}: {source}")]
    Object {
        program: &'static str,
        #[source]
        source: EbpfError,
    },
    #[error("the BPF object of {program} has no program named {program} of the expected type")]
    MissingProgram { program: &'static str },
    #[error("loading {program} into the kernel (the verifier log follows the cause): {source}")]
    Load {
        program: &'static str,
        #[source]
        source: ProgramError,
    },
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's return value (`XDP_PASS`, `TC_ACT_OK`, ...).
    pub verdict: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// Mean run time per repetition, as the kernel measured it.
    pub duration: Duration,
}

/// A loaded (verified) program together with its maps. Dropping it unloads the program and
/// detaches whatever links it still owns.
pub struct LoadedProgram {
    object: ProgramObject,
    ebpf: Ebpf,
}

impl LoadedProgram {
    /// Parses the embedded object, creates its maps and loads its program into the kernel.
    pub fn load(object: ProgramObject) -> Result<LoadedProgram, LoadError> {
        let program = object.program_name();
        let mut ebpf =
            Ebpf::load(object.elf()).map_err(|source| LoadError::Object { program, source })?;
        let handle = ebpf
            .program_mut(program)
            .ok_or(LoadError::MissingProgram { program })?;
        let result = match object {
            ProgramObject::TcPod => {
                let classifier: &mut SchedClassifier = handle
                    .try_into()
                    .map_err(|_| LoadError::MissingProgram { program })?;
                classifier.load()
            }
            ProgramObject::XdpUplink => {
                let xdp: &mut Xdp = handle
                    .try_into()
                    .map_err(|_| LoadError::MissingProgram { program })?;
                xdp.load()
            }
        };
        result.map_err(|source| LoadError::Load { program, source })?;
        Ok(LoadedProgram { object, ebpf })
    }

    pub fn object(&self) -> ProgramObject {
        self.object
    }

    /// The underlying aya object, for map access.
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// The TC classifier, when this is [`ProgramObject::TcPod`].
    pub fn classifier_mut(&mut self) -> Option<&mut SchedClassifier> {
        self.ebpf
            .program_mut(self.object.program_name())
            .and_then(|program| program.try_into().ok())
    }

    /// The XDP program, when this is [`ProgramObject::XdpUplink`].
    pub fn xdp_mut(&mut self) -> Option<&mut Xdp> {
        self.ebpf
            .program_mut(self.object.program_name())
            .and_then(|program| program.try_into().ok())
    }

    /// Runs the program on `frame` through `BPF_PROG_TEST_RUN` (`repeat` times), without
    /// attaching it anywhere. Maps are updated as for a real packet.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, ProgramError> {
        // Room for programs that grow the frame (encapsulation, ICMP errors).
        let mut output = vec![0u8; frame.len() + 512];
        let options = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut output),
            repeat,
            ..TestRunOptions::default()
        };
        let program = self.object.program_name();
        let not_found = || ProgramError::UnexpectedProgramType;
        let result = match self.object {
            ProgramObject::TcPod => {
                let classifier: &SchedClassifier = self
                    .ebpf
                    .program(program)
                    .ok_or_else(not_found)?
                    .try_into()?;
                classifier.test_run(options)?
            }
            ProgramObject::XdpUplink => {
                let xdp: &Xdp = self
                    .ebpf
                    .program(program)
                    .ok_or_else(not_found)?
                    .try_into()?;
                xdp.test_run(options)?
            }
        };
        output.truncate(result.data_size_out as usize);
        Ok(TestRunOutcome {
            verdict: result.return_value,
            frame: output,
            duration: result.duration,
        })
    }

    /// The kernel's id of the loaded program (as `bpftool prog` shows it).
    pub fn program_id(&self) -> Option<u32> {
        let program = self.ebpf.program(self.object.program_name())?;
        program.info().ok().map(|info| info.id())
    }
}
