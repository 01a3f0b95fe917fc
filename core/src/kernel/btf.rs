//! Just enough of a BTF reader to find struct member offsets in the running kernel's
//! `/sys/kernel/btf/vmlinux`: the BPF side follows task -> files -> fdtable -> file -> socket
//! -> sock with them (see `ebpf/src/socket.rs`), which is CO-RE done by hand.

use std::collections::HashMap;

use probectl_common::{AddressOffsets, KernelOffsets};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no {0}")]
    Missing(String),
}

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

struct Member {
    name: u32,
    type_id: u32,
    /// Offset in bits.
    bit_offset: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// Referenced type for modifiers and typedefs.
    target: u32,
    members: Vec<Member>,
}

/// The types of a BTF blob, by id (id 0 is void).
pub struct Btf {
    strings: Vec<u8>,
    types: Vec<Type>,
    structs_by_name: HashMap<String, u32>,
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, BtfError> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    pub fn parse(bytes: &[u8]) -> Result<Btf, BtfError> {
        if bytes.get(0..2) != Some(&[0x9f, 0xeb][..]) {
            return Err(BtfError::Malformed(
                "bad magic (only little-endian BTF is read)",
            ));
        }
        let header_len = u32_at(bytes, 4)? as usize;
        let type_off = u32_at(bytes, 8)? as usize;
        let type_len = u32_at(bytes, 12)? as usize;
        let str_off = u32_at(bytes, 16)? as usize;
        let str_len = u32_at(bytes, 20)? as usize;
        let types_section = bytes
            .get(header_len + type_off..header_len + type_off + type_len)
            .ok_or(BtfError::Malformed("type section out of range"))?;
        let strings = bytes
            .get(header_len + str_off..header_len + str_off + str_len)
            .ok_or(BtfError::Malformed("string section out of range"))?
            .to_vec();
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            target: 0,
            members: Vec::new(),
        }];
        let mut at = 0;
        while at < types_section.len() {
            let name = u32_at(types_section, at)?;
            let info = u32_at(types_section, at + 4)?;
            let size_or_type = u32_at(types_section, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            at += match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION => {
                    for index in 0..vlen {
                        let base = at + index * 12;
                        let offset = u32_at(types_section, base + 8)?;
                        members.push(Member {
                            name: u32_at(types_section, base)?,
                            type_id: u32_at(types_section, base + 4)?,
                            // With kind_flag, the top 8 bits are a bitfield size.
                            bit_offset: if kind_flag {
                                offset & 0x00ff_ffff
                            } else {
                                offset
                            },
                        });
                    }
                    vlen * 12
                }
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                _ => 0,
            };
            types.push(Type {
                name,
                kind,
                target: size_or_type,
                members,
            });
        }
        let mut btf = Btf {
            strings,
            types,
            structs_by_name: HashMap::new(),
        };
        for (id, ty) in btf.types.iter().enumerate() {
            if ty.kind == KIND_STRUCT && ty.name != 0 {
                let name = btf.string(ty.name).to_string();
                // Keep the first (complete) definition of a name.
                btf.structs_by_name.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, offset: u32) -> &str {
        let start = offset as usize;
        let tail = self.strings.get(start..).unwrap_or_default();
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).unwrap_or("")
    }

    /// Follows typedefs and modifiers (const, volatile, ...) to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize).map(|ty| ty.kind) {
                // typedef, volatile, const, restrict, type_tag
                Some(8..=11) | Some(18) => id = self.types[id as usize].target,
                _ => break,
            }
        }
        id
    }

    /// Byte offset of `member` in struct `name`, looking inside anonymous struct and union
    /// members (e.g. `sock_common.skc_daddr` sits in an anonymous union).
    pub fn member_offset(&self, name: &str, member: &str) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing(format!("{name}.{member}"));
        let id = *self.structs_by_name.get(name).ok_or_else(missing)?;
        self.find_member(id, member, 0)
            .map(|bits| bits / 8)
            .ok_or_else(missing)
    }

    fn find_member(&self, id: u32, member: &str, base_bits: u32) -> Option<u32> {
        let ty = self.types.get(id as usize)?;
        for field in &ty.members {
            let offset = base_bits + field.bit_offset;
            if field.name != 0 && self.string(field.name) == member {
                return Some(offset);
            }
            if field.name == 0 {
                let inner = self.resolve(field.type_id);
                if matches!(
                    self.types.get(inner as usize).map(|t| t.kind),
                    Some(KIND_STRUCT | KIND_UNION)
                ) {
                    if let Some(found) = self.find_member(inner, member, offset) {
                        return Some(found);
                    }
                }
            }
        }
        None
    }

    /// The offsets `ebpf/src/socket.rs` follows.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let sock_common = |field| self.member_offset("sock_common", field);
        let sk_common = self.member_offset("sock", "__sk_common")?;
        Ok(KernelOffsets {
            valid: 1,
            task_files: self.member_offset("task_struct", "files")?,
            files_fdt: self.member_offset("files_struct", "fdt")?,
            fdtable_fd: self.member_offset("fdtable", "fd")?,
            fdtable_max_fds: self.member_offset("fdtable", "max_fds")?,
            file_private_data: self.member_offset("file", "private_data")?,
            file_inode: self.member_offset("file", "f_inode")?,
            inode_mode: self.member_offset("inode", "i_mode")?,
            inode_ino: self.member_offset("inode", "i_ino")?,
            socket_type: self.member_offset("socket", "type")?,
            socket_sk: self.member_offset("socket", "sk")?,
            sock_family: sk_common + sock_common("skc_family")?,
            sock_daddr: sk_common + sock_common("skc_daddr")?,
            sock_rcv_saddr: sk_common + sock_common("skc_rcv_saddr")?,
            sock_dport: sk_common + sock_common("skc_dport")?,
            sock_num: sk_common + sock_common("skc_num")?,
            sock_v6_daddr: sk_common + sock_common("skc_v6_daddr")?,
            sock_v6_rcv_saddr: sk_common + sock_common("skc_v6_rcv_saddr")?,
            task_signal: self.member_offset("task_struct", "signal")?,
            signal_live: self.member_offset("signal_struct", "live")?,
        })
    }
}

impl Btf {
    /// The offsets the address fallback follows (ebpf/src/compat.rs): from the task's VMA
    /// cache to the mapped file's inode number. Kernels from 6.1 on have no VMA cache.
    pub fn address_offsets(&self) -> Result<AddressOffsets, BtfError> {
        Ok(AddressOffsets {
            task_vmacache_vmas: self.member_offset("task_struct", "vmacache")?
                + self.member_offset("vmacache", "vmas")?,
            vma_start: self.member_offset("vm_area_struct", "vm_start")?,
            vma_end: self.member_offset("vm_area_struct", "vm_end")?,
            vma_pgoff: self.member_offset("vm_area_struct", "vm_pgoff")?,
            vma_file: self.member_offset("vm_area_struct", "vm_file")?,
            file_inode: self.member_offset("file", "f_inode")?,
            inode_ino: self.member_offset("inode", "i_ino")?,
            _padding: 0,
        })
    }
}

/// The running kernel's offsets for the address fallback, from its BTF.
pub fn running_address_offsets() -> Result<AddressOffsets, BtfError> {
    let bytes = std::fs::read(VMLINUX_BTF).map_err(|source| BtfError::Read {
        path: VMLINUX_BTF,
        source,
    })?;
    Btf::parse(&bytes)?.address_offsets()
}

/// The running kernel's offsets, from its BTF.
pub fn running_kernel_offsets() -> Result<KernelOffsets, BtfError> {
    let bytes = std::fs::read(VMLINUX_BTF).map_err(|source| BtfError::Read {
        path: VMLINUX_BTF,
        source,
    })?;
    Btf::parse(&bytes)?.kernel_offsets()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pahole-independent cross-check: `sock_common` starts `sock`, and the members the BPF
    /// side reads sit where the kernel's own layout rules put them relative to each other.
    #[test]
    fn offsets_of_the_running_kernel_are_found_and_plausible() {
        let offsets = running_kernel_offsets().expect("kernel BTF");
        assert_eq!(offsets.valid, 1);
        // struct sock_common begins with the address pair, then the port pair.
        assert_eq!(offsets.sock_daddr, 0);
        assert_eq!(offsets.sock_rcv_saddr, 4);
        assert_eq!(offsets.sock_dport, 12);
        assert_eq!(offsets.sock_num, 14);
        assert_eq!(offsets.sock_family, 16);
        assert!(offsets.task_files > 0 && offsets.task_files < 16384);
        assert!(offsets.sock_v6_daddr > offsets.sock_family);
    }

    #[test]
    fn unknown_members_are_reported() {
        let bytes = std::fs::read(VMLINUX_BTF).expect("kernel BTF");
        let btf = Btf::parse(&bytes).expect("parse");
        let error = btf
            .member_offset("socket", "no_such_member")
            .expect_err("missing");
        assert_eq!(error.to_string(), "kernel BTF has no socket.no_such_member");
    }
}
