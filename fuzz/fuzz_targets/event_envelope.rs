//! Stored event records as a damaged or hostile disk holds them: opening one may fail, never
//! panic; a body that decodes seals and opens back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reckon::event::{Envelope, EnvelopeBody};

fuzz_target!(|data: &[u8]| {
    let _ = Envelope::open(data);
    if let Ok(body) = reckon::codec::decode::<EnvelopeBody>(data) {
        let (sealed, record) = Envelope::seal(body).expect("a decoded body encodes");
        assert_eq!(Envelope::open(&record).expect("a sealed record opens"), sealed);
    }
});
