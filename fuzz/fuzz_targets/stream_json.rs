//! The stream API's request bodies (ImageStream, ImageStreamTag, ImageStreamMapping, ImageStreamImport) decoded
//! and validated as the API does: never a panic, whatever the JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streams::import::ImageStreamImport;
use streams::model::{ImageStream, ImageStreamMapping, ImageStreamTag};

fuzz_target!(|data: &[u8]| {
    if let Ok(stream) = serde_json::from_slice::<ImageStream>(data) {
        let _ = streams::rules::validate_spec(&stream);
        let _ = serde_json::to_vec(&stream).unwrap();
    }
    if let Ok(tag) = serde_json::from_slice::<ImageStreamTag>(data) {
        let _ = serde_json::to_vec(&tag).unwrap();
    }
    let _ = serde_json::from_slice::<ImageStreamMapping>(data);
    let _ = serde_json::from_slice::<ImageStreamImport>(data);
});
