// Included by every XDP object's binary (`src/bin/*.rs`): what each needs
// besides its programs. Included, not a macro of the library, so the
// generator's object, which links nothing of the library, stays without
// the server's maps (a binary using the library links all of them in).

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

// GPL-compatible so the kernel lets us call every helper we may need.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
