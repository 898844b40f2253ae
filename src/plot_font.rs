//! The font every plot draws its text with: DejaVu Sans, bundled in `assets/fonts/` with its
//! licence (`LICENSE-DejaVu.txt`, the Bitstream Vera licence), registered with plotters' `ab_glyph`
//! renderer under the family name [`FONT`]. With that renderer plotters looks every font up in its
//! own registry — for PNG text and for laying out SVG text alike — so each plotting function calls
//! [`register`] before it draws; no system font is needed.

use std::sync::Once;

use plotters::style::FontStyle;

/// The family name plots ask for.
pub const FONT: &str = "sans-serif";

/// DejaVu Sans Book.
const FONT_BYTES: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Registers the bundled font as [`FONT`] (once per process; later calls do nothing).
pub fn register() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType file checked in with the code (the plot tests draw
        // with it), so registration cannot fail at run time.
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES);
    });
}
