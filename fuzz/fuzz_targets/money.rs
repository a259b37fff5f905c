#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| billing::fuzzing::money(data));
