//! Reads whether an executable packs its relative relocations (shared by the build script
//! and the test that checks the binary).

/// Whether an ELF64 little-endian file's dynamic section has a `DT_RELR` (36) entry.
pub fn has_relr(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    if elf.get(..5) != Some(b"\x7fELF\x02".as_slice()) {
        return false;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    (0..usize::from(phnum)).any(|i| {
        let ph = phoff as usize + i * usize::from(phentsize);
        // PT_DYNAMIC = 2: p_offset at +8, p_filesz at +32; entries are (tag, value) pairs.
        if elf.get(ph..ph + 4) != Some(2u32.to_le_bytes().as_slice()) {
            return false;
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            return false;
        };
        (off as usize..off.saturating_add(size) as usize)
            .step_by(16)
            .any(|e| u64_at(e) == Some(36))
    })
}
