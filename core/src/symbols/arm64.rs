//! The arm64 (A64) code analysis placement needs: the `ret` instructions of a Go function, its
//! exit points (see [`crate::symbols::placement::Placement::Returns`]).
//!
//! A64 instructions are 4 bytes, 4-byte aligned, so every aligned word of a function is the
//! start of an instruction *if it is code*. What is not proven by alignment is that a word is
//! code: Go's arm64 assembler puts literal pools (constants loaded with `LDR (literal)`) inside
//! a function's bytes, and a uprobe's `BRK` over a constant would change what the program
//! loads. So a `ret` counts only when it is reached by control flow, over instructions decoded
//! here, from the function's first instruction or from a point where the Go runtime resumes
//! it: the call of `runtime.deferreturn`, where a goroutine that recovered from a panic goes
//! on (the `deferreturn` offset of the function's `_func`; that call is reached by no branch),
//! and is no literal load's data:
//! - `B`, `B.cond`, `CBZ`/`CBNZ`, `TBZ`/`TBNZ`: their target (which must be inside the
//!   function: a jump out of it would be a return path without a `ret`, refused), and the next
//!   word for the conditional ones;
//! - `BL`, `BLR`: the next word (the call returns; after a call that never returns, such as
//!   `runtime.panicIndex`, the next word may be past the function's end: nothing follows);
//! - `RET Xn`: an exit point; no successor;
//! - `BR` and the other branches to a register: refused (a jump table or a tail call whose
//!   targets are not known);
//! - `BRK`, `HLT`, `UDF`: no successor (a trap);
//! - anything else: the next word, which must be inside the function.
//!
//! A word that is the data of an `LDR (literal)`/`LDRSW (literal)` anywhere in the function
//! and is reached as code refuses the function (it would be both).
//!
//! Encodings from the Arm Architecture Reference Manual (A64 base instructions, "Branches,
//! Exception Generating and System instructions" and "Loads and Stores": load register
//! (literal)).

/// What an instruction does to control flow, for [`go_returns`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Goes on with the next instruction.
    Next,
    /// `RET`.
    Return,
    /// A branch to a word offset relative to this one; `conditional`: or the next instruction.
    Branch { delta: i64, conditional: bool },
    /// `BL`/`BLR`: continues after the call returns.
    Call,
    /// A branch to a register other than `RET` or `BLR`.
    Indirect,
    /// A trap: no successor.
    Stop,
}

/// Sign-extends the `bits`-bit field of `word` at `shift`.
fn signed_field(word: u32, shift: u32, bits: u32) -> i64 {
    let field = (word >> shift) & ((1 << bits) - 1);
    let unused = 64 - bits;
    (i64::from(field) << unused) >> unused
}

fn flow(word: u32) -> Flow {
    match word {
        // B imm26
        _ if word & 0xfc00_0000 == 0x1400_0000 => Flow::Branch {
            delta: signed_field(word, 0, 26),
            conditional: false,
        },
        // BL imm26
        _ if word & 0xfc00_0000 == 0x9400_0000 => Flow::Call,
        // B.cond / BC.cond imm19
        _ if word & 0xff00_0000 == 0x5400_0000 => Flow::Branch {
            delta: signed_field(word, 5, 19),
            conditional: true,
        },
        // CBZ / CBNZ imm19
        _ if word & 0x7e00_0000 == 0x3400_0000 => Flow::Branch {
            delta: signed_field(word, 5, 19),
            conditional: true,
        },
        // TBZ / TBNZ imm14
        _ if word & 0x7e00_0000 == 0x3600_0000 => Flow::Branch {
            delta: signed_field(word, 5, 14),
            conditional: true,
        },
        // RET Xn
        _ if word & 0xffff_fc1f == 0xd65f_0000 => Flow::Return,
        // BLR Xn
        _ if word & 0xffff_fc1f == 0xd63f_0000 => Flow::Call,
        // BR Xn and every other unconditional branch to a register (pointer-authenticated
        // forms, ERET, DRPS)
        _ if word & 0xfe00_0000 == 0xd600_0000 => Flow::Indirect,
        // BRK, HLT
        _ if word & 0xffe0_001f == 0xd420_0000 || word & 0xffe0_001f == 0xd440_0000 => Flow::Stop,
        // UDF
        _ if word & 0xffff_0000 == 0 => Flow::Stop,
        _ => Flow::Next,
    }
}

/// The words an `LDR (literal)` family load reads, as (word offset relative to the
/// instruction, words); `None` for another instruction.
fn literal_data(word: u32) -> Option<(i64, usize)> {
    if word & 0x3b00_0000 != 0x1800_0000 {
        return None;
    }
    let vector = word & (1 << 26) != 0;
    let bytes = match (word >> 30, vector) {
        (0, _) | (2, false) => 4,
        (1, _) => 8,
        // PRFM (literal) reads nothing into a register.
        (3, false) => return None,
        // 128-bit vector load; opc 3 with V is unallocated: counted as the widest.
        (2, true) | (3, true) => 16,
        _ => return None,
    };
    Some((signed_field(word, 5, 19), bytes / 4))
}

/// The byte offsets of the `ret` instructions of the Go function whose code is `code`, at
/// `address` (see the module docs), or why they cannot all be proven. `deferreturn`: the
/// address of `runtime.deferreturn`, whose calls are where the runtime resumes a function
/// after a recovered panic (`None`: the executable has none, so nothing calls it).
pub fn go_returns(code: &[u8], address: u64, deferreturn: Option<u64>) -> Result<Vec<u64>, String> {
    if !code.len().is_multiple_of(4) {
        return Err("the function's size is not a multiple of 4 bytes".into());
    }
    let words: Vec<u32> = code
        .chunks_exact(4)
        .map(|word| u32::from_le_bytes([word[0], word[1], word[2], word[3]]))
        .collect();
    let count = words.len() as i64;
    let mut data = vec![false; words.len()];
    for (index, &word) in words.iter().enumerate() {
        if let Some((delta, length)) = literal_data(word) {
            let start = index as i64 + delta;
            for at in start..start + length as i64 {
                if (0..count).contains(&at) {
                    data[at as usize] = true;
                }
            }
        }
    }
    let offset = |index: usize| index as u64 * 4;
    let mut seen = vec![false; words.len()];
    let mut work = vec![0usize];
    if let Some(deferreturn) = deferreturn {
        for (index, &word) in words.iter().enumerate() {
            let target =
                (address + offset(index)).wrapping_add_signed(4 * signed_field(word, 0, 26));
            if word & 0xfc00_0000 == 0x9400_0000 && target == deferreturn && !data[index] {
                work.push(index);
            }
        }
    }
    let mut returns = Vec::new();
    while let Some(index) = work.pop() {
        if std::mem::replace(&mut seen[index], true) {
            continue;
        }
        if data[index] {
            return Err(format!(
                "the literal data at +{:#x} is reached as code",
                offset(index)
            ));
        }
        let next = index + 1;
        match flow(words[index]) {
            Flow::Next if next < words.len() => work.push(next),
            Flow::Next => {
                return Err(format!(
                    "the code runs past the function's end at +{:#x}",
                    offset(index)
                ))
            }
            Flow::Return => returns.push(offset(index)),
            Flow::Call => {
                if next < words.len() {
                    work.push(next);
                }
            }
            Flow::Branch { delta, conditional } => {
                let target = index as i64 + delta;
                if !(0..count).contains(&target) {
                    return Err(format!(
                        "a jump out of the function at +{:#x}",
                        offset(index)
                    ));
                }
                work.push(target as usize);
                if conditional {
                    if next >= words.len() {
                        return Err(format!(
                            "the code runs past the function's end at +{:#x}",
                            offset(index)
                        ));
                    }
                    work.push(next);
                }
            }
            Flow::Indirect => {
                return Err(format!("an indirect jump at +{:#x}", offset(index)));
            }
            Flow::Stop => {}
        }
    }
    if returns.is_empty() {
        return Err("no ret instruction".into());
    }
    returns.sort_unstable();
    Ok(returns)
}

/// tests/peers/guest_peer.go built by Debian's Go for arm64 into `dir`, for tests on the
/// x86-64 host: its path.
#[cfg(test)]
pub(crate) fn build_go_peer(dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let program = dir.join("guest_peer");
    let source =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/peers/guest_peer.go");
    let built = std::process::Command::new("go")
        .args(["build", "-o"])
        .arg(&program)
        .arg(&source)
        .env("GOARCH", "arm64")
        .env("CGO_ENABLED", "0")
        .env("GO111MODULE", "off")
        .env("GOCACHE", dir.join("cache"))
        .status()
        .expect("go build");
    assert!(built.success(), "go build for arm64");
    program
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|word| word.to_le_bytes()).collect()
    }

    /// [`go_returns`] of a function at 0x1000 in an executable without `runtime.deferreturn`.
    fn go_returns_at(code: &[u8]) -> Result<Vec<u64>, String> {
        go_returns(code, 0x1000, None)
    }

    const RET: u32 = 0xd65f_03c0;
    const NOP: u32 = 0xd503_201f;
    /// `b.eq` to 8 bytes (two words) ahead.
    const BEQ_2: u32 = 0x5400_0040;
    /// `bl` to anywhere (the target is not followed).
    const BL: u32 = 0x9400_0010;
    /// `ldr x0, <8 bytes ahead>`.
    const LDR_LITERAL_2: u32 = 0x5800_0040;

    #[test]
    fn decodes_the_fixed_encodings() {
        assert_eq!(flow(RET), Flow::Return);
        // ret x1
        assert_eq!(flow(0xd65f_0020), Flow::Return);
        // br x16
        assert_eq!(flow(0xd61f_0200), Flow::Indirect);
        // blr x2
        assert_eq!(flow(0xd63f_0040), Flow::Call);
        // b .-4
        assert_eq!(
            flow(0x17ff_ffff),
            Flow::Branch {
                delta: -1,
                conditional: false
            }
        );
        // cbz x0, .+8 ; tbnz w1, #3, .+12
        assert_eq!(
            flow(0xb400_0040),
            Flow::Branch {
                delta: 2,
                conditional: true
            }
        );
        assert_eq!(
            flow(0x3718_0061),
            Flow::Branch {
                delta: 3,
                conditional: true
            }
        );
        assert_eq!(flow(0xd420_0000), Flow::Stop);
        assert_eq!(flow(0), Flow::Stop);
        assert_eq!(flow(NOP), Flow::Next);
        assert_eq!(literal_data(LDR_LITERAL_2), Some((2, 2)));
        // ldr w1, .+4
        assert_eq!(literal_data(0x1800_0021), Some((1, 1)));
        // ldr q0, .-4
        assert_eq!(literal_data(0x9cff_ffe0), Some((-1, 4)));
    }

    #[test]
    fn finds_every_reachable_ret() {
        // 0: b.eq +8; 4: ret; 8: bl; c: ret
        let found = go_returns_at(&code(&[BEQ_2, RET, BL, RET])).expect("proven");
        assert_eq!(found, vec![0x4, 0xc]);
    }

    #[test]
    fn a_ret_in_a_literal_pool_is_not_an_exit() {
        // 0: ldr x0, +8; 4: ret; 8-c: the constant, which reads as `ret` and is never run.
        let found = go_returns_at(&code(&[LDR_LITERAL_2, RET, RET, 0])).expect("proven");
        assert_eq!(found, vec![0x4]);
        // The same constant reached as code: refused.
        assert!(go_returns_at(&code(&[LDR_LITERAL_2, NOP, RET, 0]))
            .expect_err("both")
            .contains("literal data at +0x8"));
    }

    #[test]
    fn refuses_what_it_cannot_follow() {
        assert!(go_returns_at(&code(&[0xd61f_0200]))
            .expect_err("br")
            .contains("indirect jump at +0x0"));
        // b .+0x40, out of the function
        assert!(go_returns_at(&code(&[0x1400_0010, RET]))
            .expect_err("out")
            .contains("jump out of the function at +0x0"));
        assert!(go_returns_at(&code(&[NOP]))
            .expect_err("past")
            .contains("past the function's end"));
        assert!(go_returns_at(&code(&[BL])).expect_err("none") == "no ret instruction");
        assert!(go_returns(&[0xc0, 0x03, 0x5f], 0x1000, None).is_err());
    }

    #[test]
    fn a_deferreturn_call_is_where_the_runtime_resumes() {
        // 0: b +0xc (over the landing point); 4: bl runtime.deferreturn (at 0x1004 + 0x40);
        // 8: ret; c: ret. Reached by no branch, the `bl` at 4 is run after a recovered panic.
        let words = [0x1400_0003, 0x9400_0010, RET, RET];
        assert_eq!(go_returns_at(&code(&words)).expect("proven"), vec![0xc]);
        let with = go_returns(&code(&words), 0x1000, Some(0x1044)).expect("proven");
        assert_eq!(with, vec![0x8, 0xc]);
    }
}
