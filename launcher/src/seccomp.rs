//! Step 12, seccomp: the programs built into this binary, and their installation.
//!
//! `build.rs` generates them at build time from the reviewed tables in `bulkhead-seccomp`
//! (`bulkhead_seccomp::build_filters`) and this module embeds the result as bytes, so
//! what runs with privilege is this decoder and one `seccomp(2)` call per program, not the
//! generator. Layout (`bulkhead_seccomp::encode`): per program, its instruction count
//! as a little-endian `u16`, then 8 bytes per instruction: `code` (`u16` LE), `jt`, `jf`, `k`
//! (`u32` LE).

use std::io;

/// The programs, in install order, as `build.rs` wrote them.
static ENCODED: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seccomp.bpf"));
/// Why `ENCODED` is empty (no program could be built for this target), else empty.
const WHY_NONE: &str = include_str!(concat!(env!("OUT_DIR"), "/seccomp.why"));

/// The kernel's limit on a program's length (`BPF_MAXINSNS`).
const MAX_INSNS: usize = 4096;

/// One program, ready for `seccomp(2)`.
pub type Program = Vec<libc::sock_filter>;

/// The embedded programs, in the order they must be installed.
pub fn programs() -> Result<Vec<Program>, String> {
    if ENCODED.is_empty() {
        return Err(WHY_NONE.to_string());
    }
    decode(ENCODED)
}

fn decode(mut bytes: &[u8]) -> Result<Vec<Program>, String> {
    let broken = || "the embedded seccomp programs are malformed (rebuild bulkhead)".to_string();
    let mut programs = Vec::new();
    while let Some((len, rest)) = bytes.split_first_chunk::<2>() {
        let len = usize::from(u16::from_le_bytes(*len));
        if len == 0 || len > MAX_INSNS || rest.len() < len * 8 {
            return Err(broken());
        }
        let (insns, rest) = rest.split_at(len * 8);
        let program = insns
            .chunks_exact(8)
            .map(|i| libc::sock_filter {
                code: u16::from_le_bytes([i[0], i[1]]),
                jt: i[2],
                jf: i[3],
                k: u32::from_le_bytes([i[4], i[5], i[6], i[7]]),
            })
            .collect();
        programs.push(program);
        bytes = rest;
    }
    if !bytes.is_empty() || programs.is_empty() {
        return Err(broken());
    }
    Ok(programs)
}

/// `seccomp(SECCOMP_SET_MODE_FILTER, 0, program)`: no flags (no TSYNC, no log), as the
/// launcher has always installed them; `PR_SET_NO_NEW_PRIVS` is already set (step 10).
pub fn install(program: &[libc::sock_filter]) -> io::Result<()> {
    let len =
        u16::try_from(program.len()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `len` instructions that outlive the call; the kernel copies
    // them (and never writes through the pointer) before it returns.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(program: &[libc::sock_filter]) -> Vec<(u16, u8, u8, u32)> {
        program.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect()
    }

    /// The bytes built into the launcher are exactly what the policy generates now: a table
    /// change without a rebuild of the launcher, or a decoder that disagrees with
    /// `encode`, fails here.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_embedded_programs_equal_a_fresh_build() {
        let fresh = bulkhead_seccomp::build_filters().expect("the policy builds");
        let embedded = programs().expect("the launcher embeds programs");
        assert_eq!(embedded.len(), fresh.len());
        for (embedded, fresh) in embedded.iter().zip(&fresh) {
            let fresh: Vec<_> = fresh.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect();
            assert_eq!(fields(embedded), fresh);
        }
        assert_eq!(
            ENCODED,
            bulkhead_seccomp::encode(&fresh).unwrap().as_slice()
        );
        assert!(WHY_NONE.is_empty(), "{WHY_NONE}");
    }

    #[test]
    fn decode_refuses_what_encode_never_writes() {
        // One program of one instruction, `return SECCOMP_RET_ALLOW`.
        let good = [1, 0, 0x06, 0, 0, 0, 0, 0, 0xff, 0x7f];
        assert_eq!(
            fields(&decode(&good).unwrap()[0]),
            [(0x06, 0, 0, 0x7fff_0000)]
        );
        for bad in [
            &[][..],           // no program
            &good[..9],        // an instruction cut short
            &[0, 0][..],       // an empty program
            &[1][..],          // a count cut short
            &[0x01, 0x10][..], // 4,097 instructions
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(decode(&trailing).is_err());
    }
}
