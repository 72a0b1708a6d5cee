// The correlation grid of a parameter set (riskengine.forms.CorrelationGridWidget).
// Editing a cell edits its mirror; cells are coloured by value (same rule as the server side:
// red for positive, blue for negative, stronger as |rho| approaches 1). The server's colours come
// as data-colour attributes and are applied here: the Content-Security-Policy allows no inline
// style attributes, while styles set from a script file are allowed.
(function () {
  "use strict";

  function colour(text) {
    var rho = parseFloat(text);
    if (!isFinite(rho)) return "#fff3cd";
    rho = Math.max(-1, Math.min(1, rho));
    var alpha = (0.08 + 0.5 * Math.abs(rho)).toFixed(3);
    return rho >= 0 ? "rgba(200, 40, 40, " + alpha + ")" : "rgba(40, 80, 200, " + alpha + ")";
  }

  function bind(grid) {
    var cells = grid.querySelectorAll("input.rho-cell");
    cells.forEach(function (cell) {
      cell.addEventListener("input", function () {
        var mirror = grid.querySelector(
          'input.rho-cell[data-i="' + cell.dataset.j + '"][data-j="' + cell.dataset.i + '"]'
        );
        if (mirror) {
          mirror.value = cell.value;
          mirror.parentElement.style.background = colour(cell.value);
        }
        cell.parentElement.style.background = colour(cell.value);
        var rho = parseFloat(cell.value);
        var bad = cell.value.trim() !== "" && (!isFinite(rho) || Math.abs(rho) > 1);
        cell.classList.toggle("rho-invalid", bad);
        if (mirror) mirror.classList.toggle("rho-invalid", bad);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-rho-grid]").forEach(function (grid) {
      grid.querySelectorAll("[data-colour]").forEach(function (cell) {
        cell.style.background = cell.dataset.colour;
      });
      bind(grid);
    });
  });
})();
