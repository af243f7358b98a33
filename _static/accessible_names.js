// Accessible names that contain what a reader sees (axe-core's label-content-name-mismatch), and
// no empty table headers, for markup that the theme and pandas write.
function nameWhatIsSeen() {
  // The colour-mode button is named "Color mode"; its icons' titles ("Light", "Dark"), which
  // Font Awesome turns into visible <title> text, would be a second, different name.
  for (const icon of document.querySelectorAll(".theme-switch-button .theme-switch")) {
    icon.removeAttribute("title");
    icon.removeAttribute("aria-labelledby");
    for (const title of icon.querySelectorAll("title")) title.remove();
  }
  // The search field shows "Search Ctrl+K": its visible text is its name.
  for (const field of document.querySelectorAll(".search-button-field[aria-label]")) {
    field.removeAttribute("aria-label");
  }
  // A hidden cell's toggle is named by its visible text ("Show code cell source").
  for (const toggle of document.querySelectorAll('summary[aria-label="Toggle hidden content"]')) {
    toggle.removeAttribute("aria-label");
  }
  // A pandas table's top-left header cell is empty: name it for screen readers.
  for (const header of document.querySelectorAll("table thead th:empty")) {
    const label = document.createElement("span");
    label.className = "visually-hidden";
    label.textContent = header.cellIndex === 0 ? "Row" : "Column";
    header.append(label);
  }
}
// Before Font Awesome replaces the icons with SVGs, and again once it has.
document.addEventListener("DOMContentLoaded", nameWhatIsSeen);
window.addEventListener("load", nameWhatIsSeen);
