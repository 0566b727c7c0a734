//! A small classic-BPF assembler for seccomp programs, and the checker every program passes.
//!
//! Classic BPF jumps only forward, and a conditional jump carries its two offsets in 8 bits
//! (at most 255 instructions ahead). The assembler takes symbolic [`Label`]s instead of
//! offsets; [`Assembler::finish`] lays the code out, and where a conditional branch would have
//! to reach further than 255 it routes the branch through a trampoline (`JA` with a 32-bit
//! offset) placed right after the jump. Then [`check`] verifies what the kernel's verifier
//! will (`bpf_check_classic`, `seccomp_check_filter`): known opcodes only, aligned loads inside
//! `struct seccomp_data`, every jump forward and inside the program, a `RET` at the end, and
//! at most [`BPF_MAXINSNS`] instructions.

/// One classic-BPF instruction, laid out as the kernel's `struct sock_filter`
/// (`<linux/filter.h>`): opcode, the two 8-bit conditional offsets, the 32-bit operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    /// The opcode (`BPF_LD | BPF_W | BPF_ABS`, ...).
    pub code: u16,
    /// Conditional jumps: how many instructions to skip when the condition holds.
    pub jt: u8,
    /// Conditional jumps: how many instructions to skip when it does not.
    pub jf: u8,
    /// The operand: a constant, an offset into `struct seccomp_data`, a return value.
    pub k: u32,
}

/// A whole program, in the order the kernel runs it.
pub type BpfProgram = Vec<SockFilter>;

// Classic BPF opcodes, from <linux/bpf_common.h>.
/// `BPF_LD | BPF_W | BPF_ABS`: `A = *(u32 *)(data + k)`.
pub(super) const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`: `A &= k`.
pub(super) const ALU_AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JA`: `pc += k` (32-bit offset).
pub(super) const JMP_JA: u16 = 0x05;
/// `BPF_JMP | BPF_JEQ | BPF_K`: `pc += (A == k) ? jt : jf`.
pub(super) const JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGT | BPF_K`: `pc += (A > k) ? jt : jf` (unsigned).
pub(super) const JMP_JGT_K: u16 = 0x25;
/// `BPF_JMP | BPF_JGE | BPF_K`: `pc += (A >= k) ? jt : jf` (unsigned).
pub(super) const JMP_JGE_K: u16 = 0x35;
/// `BPF_JMP | BPF_JSET | BPF_K`: `pc += (A & k != 0) ? jt : jf`.
pub(super) const JMP_JSET_K: u16 = 0x45;
/// `BPF_RET | BPF_K`: return `k`.
pub(super) const RET_K: u16 = 0x06;

/// The kernel's limit on a classic BPF program's length (`BPF_MAXINSNS`).
pub(super) const BPF_MAXINSNS: usize = 4096;
/// `sizeof(struct seccomp_data)`: `int nr; __u32 arch; __u64 ip; __u64 args[6];`.
pub(super) const SECCOMP_DATA_SIZE: u32 = 64;
/// The longest distance a conditional jump can cover (`jt` and `jf` are `u8`).
const MAX_COND_OFFSET: usize = u8::MAX as usize;

/// A place in the program, bound to the next instruction emitted after [`Assembler::bind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Label(usize);

/// The comparison of a conditional jump; the accumulator is compared with `k`, unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cond {
    /// `A == k`
    Eq,
    /// `A >= k`
    Ge,
    /// `A & k != 0`
    Set,
}

impl Cond {
    fn opcode(self) -> u16 {
        match self {
            Self::Eq => JMP_JEQ_K,
            Self::Ge => JMP_JGE_K,
            Self::Set => JMP_JSET_K,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Load(u32),
    And(u32),
    Jump {
        cond: Cond,
        k: u32,
        jt: Label,
        jf: Label,
    },
    Goto(Label),
    Ret(u32),
    Bind(Label),
}

/// Collects instructions with symbolic jump targets; [`Assembler::finish`] turns them into a
/// checked [`BpfProgram`].
#[derive(Debug, Default)]
pub(super) struct Assembler {
    items: Vec<Item>,
    labels: usize,
}

impl Assembler {
    pub(super) fn new() -> Self {
        Self::default()
    }

    /// A fresh label, to be bound exactly once.
    pub(super) fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels - 1)
    }

    /// Binds `label` to the next instruction.
    pub(super) fn bind(&mut self, label: Label) {
        self.items.push(Item::Bind(label));
    }

    /// `A = *(u32 *)(seccomp_data + offset)`.
    pub(super) fn load(&mut self, offset: u32) {
        self.items.push(Item::Load(offset));
    }

    /// `A &= k`.
    pub(super) fn and(&mut self, k: u32) {
        self.items.push(Item::And(k));
    }

    /// `if A <cond> k goto jt else goto jf`.
    pub(super) fn jump(&mut self, cond: Cond, k: u32, jt: Label, jf: Label) {
        self.items.push(Item::Jump { cond, k, jt, jf });
    }

    /// `goto target`, any distance forward.
    pub(super) fn goto(&mut self, target: Label) {
        self.items.push(Item::Goto(target));
    }

    /// `return k`.
    pub(super) fn ret(&mut self, k: u32) {
        self.items.push(Item::Ret(k));
    }

    /// Where each label lands, as an instruction index; `None` for a label never bound.
    fn layout(&self) -> Result<Vec<Option<usize>>, String> {
        let mut at = vec![None; self.labels];
        let mut pc = 0;
        for item in &self.items {
            match *item {
                Item::Bind(Label(l)) => {
                    if at[l].replace(pc).is_some() {
                        return Err(format!("label {l} is bound twice"));
                    }
                }
                _ => pc += 1,
            }
        }
        Ok(at)
    }

    /// Lays the program out, routes every conditional branch longer than 255 instructions
    /// through a `JA` trampoline, encodes it, and [`check`]s the result.
    pub(super) fn finish(mut self) -> Result<BpfProgram, String> {
        // Relaxation: find a conditional jump with a branch out of reach, put a `JA` to that
        // branch's target right after the jump and aim the branch at it; repeat until every
        // branch reaches. A jump's trampolines sit right after it, at distance 0 or 1, and
        // nothing is ever inserted between the two, so each jump is fixed at most once.
        'relax: loop {
            let at = self.layout()?;
            let mut pc = 0;
            for index in 0..self.items.len() {
                match self.items[index] {
                    Item::Bind(_) => continue,
                    Item::Jump { cond, k, jt, jf } => {
                        let far = |Label(l): Label| match at[l] {
                            Some(target) => target > pc + 1 + MAX_COND_OFFSET,
                            None => false, // reported by the encoder below
                        };
                        if far(jt) || far(jf) {
                            let mut trampolines = Vec::new();
                            let mut route = |target: Label, this: &mut Self| {
                                if !far(target) {
                                    return target;
                                }
                                let stop = this.label();
                                trampolines.push(Item::Bind(stop));
                                trampolines.push(Item::Goto(target));
                                stop
                            };
                            let jt = route(jt, &mut self);
                            let jf = route(jf, &mut self);
                            self.items[index] = Item::Jump { cond, k, jt, jf };
                            self.items.splice(index + 1..index + 1, trampolines);
                            continue 'relax;
                        }
                    }
                    _ => {}
                }
                pc += 1;
            }
            break;
        }

        let at = self.layout()?;
        let target = |Label(l): Label, pc: usize| -> Result<usize, String> {
            let Some(to) = at[l] else {
                return Err(format!("label {l} is used but never bound"));
            };
            to.checked_sub(pc + 1)
                .ok_or_else(|| format!("instruction {pc} jumps backwards, to {to}"))
        };
        let mut program = BpfProgram::new();
        for item in &self.items {
            let pc = program.len();
            let insn = match *item {
                Item::Bind(_) => continue,
                Item::Load(offset) => insn(LD_W_ABS, 0, 0, offset),
                Item::And(k) => insn(ALU_AND_K, 0, 0, k),
                Item::Ret(k) => insn(RET_K, 0, 0, k),
                Item::Goto(to) => {
                    let offset = u32::try_from(target(to, pc)?)
                        .map_err(|_| format!("instruction {pc} jumps too far"))?;
                    insn(JMP_JA, 0, 0, offset)
                }
                Item::Jump { cond, k, jt, jf } => {
                    let short = |to: Label| -> Result<u8, String> {
                        let offset = target(to, pc)?;
                        u8::try_from(offset).map_err(|_| {
                            format!("instruction {pc}: a conditional jump of {offset} > 255")
                        })
                    };
                    insn(cond.opcode(), short(jt)?, short(jf)?, k)
                }
            };
            program.push(insn);
        }
        check(&program)?;
        Ok(program)
    }
}

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> SockFilter {
    SockFilter { code, jt, jf, k }
}

/// Checks a program the way the kernel will before it accepts it as a seccomp filter: not
/// empty, at most [`BPF_MAXINSNS`] long, only the opcodes this module emits, loads of aligned
/// words inside `struct seccomp_data`, every jump forward and landing inside the program (a
/// conditional jump's offsets are 8-bit by type, so at most 255), and a `RET` at the end so no
/// path falls off it.
pub(super) fn check(program: &[SockFilter]) -> Result<(), String> {
    if program.is_empty() || program.len() > BPF_MAXINSNS {
        return Err(format!(
            "a program has 1 to {BPF_MAXINSNS} instructions, not {}",
            program.len()
        ));
    }
    let len = program.len();
    let lands = |pc: usize, offset: usize| pc + 1 + offset < len;
    for (pc, i) in program.iter().enumerate() {
        let ok = match i.code {
            LD_W_ABS => i.k % 4 == 0 && i.k < SECCOMP_DATA_SIZE,
            ALU_AND_K | RET_K => true,
            JMP_JA => usize::try_from(i.k).is_ok_and(|k| lands(pc, k)),
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => {
                lands(pc, usize::from(i.jt)) && lands(pc, usize::from(i.jf))
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "instruction {pc} ({:#04x} {} {} {:#x}) is invalid or jumps out of the program",
                i.code, i.jt, i.jf, i.k
            ));
        }
    }
    if program[len - 1].code != RET_K {
        return Err("the last instruction is not a RET".into());
    }
    Ok(())
}

/// Runs a program on one `struct seccomp_data`, as the kernel would: returns the filter's
/// return value and how many conditional jumps (comparisons) it took to get there.
#[cfg(test)]
pub(super) fn run(program: &[SockFilter], data: &[u8; SECCOMP_DATA_SIZE as usize]) -> (u32, u32) {
    let mut acc: u32 = 0;
    let mut pc = 0usize;
    let mut comparisons = 0;
    loop {
        let i = &program[pc];
        match i.code {
            LD_W_ABS => {
                let k = i.k as usize;
                acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
            }
            ALU_AND_K => acc &= i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K | JMP_JGT_K | JMP_JGE_K | JMP_JSET_K => {
                comparisons += 1;
                let taken = match i.code {
                    JMP_JEQ_K => acc == i.k,
                    JMP_JGT_K => acc > i.k,
                    JMP_JGE_K => acc >= i.k,
                    _ => acc & i.k != 0,
                };
                pc += usize::from(if taken { i.jt } else { i.jf });
            }
            RET_K => return (i.k, comparisons),
            other => panic!("unexpected BPF opcode {other:#x}"),
        }
        pc += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(nr: u32) -> [u8; 64] {
        let mut d = [0; 64];
        d[..4].copy_from_slice(&nr.to_ne_bytes());
        d
    }

    #[test]
    fn long_branches_go_through_trampolines() {
        // if nr == 7 goto far (600 instructions ahead) else goto near.
        let mut asm = Assembler::new();
        let (near, far) = (asm.label(), asm.label());
        asm.load(0);
        asm.jump(Cond::Eq, 7, far, near);
        asm.bind(near);
        for n in 0..600 {
            asm.ret(1000 + n);
        }
        asm.bind(far);
        asm.ret(1);
        let program = asm.finish().unwrap();
        assert_eq!(program.len(), 2 + 1 + 600 + 1, "one trampoline");
        assert_eq!(program[2].code, JMP_JA);
        assert_eq!(run(&program, &data(7)).0, 1);
        assert_eq!(run(&program, &data(8)).0, 1000);

        // Both branches far: two trampolines.
        let mut asm = Assembler::new();
        let (a, b) = (asm.label(), asm.label());
        asm.load(0);
        asm.jump(Cond::Ge, 5, a, b);
        for n in 0..300 {
            asm.ret(1000 + n);
        }
        asm.bind(b);
        asm.ret(2);
        for n in 0..300 {
            asm.ret(2000 + n);
        }
        asm.bind(a);
        asm.ret(3);
        let program = asm.finish().unwrap();
        assert_eq!(program.len(), 2 + 2 + 602);
        assert_eq!(run(&program, &data(4)).0, 2);
        assert_eq!(run(&program, &data(5)).0, 3);
    }

    #[test]
    fn branches_of_exactly_255_stay_direct() {
        let mut asm = Assembler::new();
        let (near, far) = (asm.label(), asm.label());
        asm.load(0);
        asm.jump(Cond::Set, 1, far, near);
        asm.bind(near);
        for n in 0..255 {
            asm.ret(n);
        }
        asm.bind(far);
        asm.ret(999);
        let program = asm.finish().unwrap();
        assert_eq!(program.len(), 2 + 255 + 1);
        assert_eq!(program[1].jt, 255);
        assert_eq!(run(&program, &data(1)).0, 999);
    }

    #[test]
    fn the_assembler_refuses_bad_labels() {
        let mut asm = Assembler::new();
        let back = asm.label();
        asm.bind(back);
        asm.load(0);
        asm.goto(back);
        asm.ret(0);
        assert!(asm.finish().unwrap_err().contains("backwards"));

        let mut asm = Assembler::new();
        let nowhere = asm.label();
        asm.goto(nowhere);
        asm.ret(0);
        assert!(asm.finish().unwrap_err().contains("never bound"));

        let mut asm = Assembler::new();
        let twice = asm.label();
        asm.bind(twice);
        asm.ret(0);
        asm.bind(twice);
        asm.ret(1);
        assert!(asm.finish().unwrap_err().contains("twice"));

        // A label bound after the last instruction: a jump off the end.
        let mut asm = Assembler::new();
        let end = asm.label();
        asm.goto(end);
        asm.bind(end);
        assert!(asm.finish().is_err());
    }

    #[test]
    fn the_checker_refuses_what_the_kernel_would() {
        let ret = || insn(RET_K, 0, 0, 0);
        assert!(check(&[]).is_err());
        assert!(check(&vec![ret(); BPF_MAXINSNS + 1]).is_err());
        assert!(check(&vec![ret(); BPF_MAXINSNS]).is_ok());
        // Loads: aligned and inside seccomp_data.
        assert!(check(&[insn(LD_W_ABS, 0, 0, 60), ret()]).is_ok());
        assert!(check(&[insn(LD_W_ABS, 0, 0, 64), ret()]).is_err());
        assert!(check(&[insn(LD_W_ABS, 0, 0, 2), ret()]).is_err());
        // Jumps land inside the program.
        assert!(check(&[insn(JMP_JEQ_K, 0, 1, 0), ret(), ret()]).is_ok());
        assert!(check(&[insn(JMP_JEQ_K, 0, 2, 0), ret(), ret()]).is_err());
        assert!(check(&[insn(JMP_JA, 0, 0, 1), ret(), ret()]).is_ok());
        assert!(check(&[insn(JMP_JA, 0, 0, 2), ret(), ret()]).is_err());
        assert!(check(&[insn(JMP_JA, 0, 0, u32::MAX), ret()]).is_err());
        // Unknown opcodes (here BPF_LDX) and a program that falls off its end.
        assert!(check(&[insn(0x01, 0, 0, 0), ret()]).is_err());
        assert!(check(&[ret(), insn(ALU_AND_K, 0, 0, 1)]).is_err());
    }
}
