// reklama's dashboard: the "Copy link" button beside an advert's tracked link. Without JavaScript
// the button stays hidden and the link is plain, selectable text. Served by the binary itself
// (the advert page's policy allows scripts from this origin only).
"use strict";

(function () {
  function selectAndCopy(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    try {
      return document.execCommand("copy");
    } catch (e) {
      return false;
    }
  }

  var buttons = document.querySelectorAll("button[data-copy]");
  Array.prototype.forEach.call(buttons, function (button) {
    var source = document.getElementById(button.getAttribute("data-copy"));
    var status = document.getElementById(button.getAttribute("data-status"));
    if (!source) {
      return;
    }
    function report(copied) {
      if (status) {
        status.textContent = copied ? "Copied." : "Selected: press Ctrl+C (⌘C) to copy.";
      }
    }
    button.hidden = false;
    button.addEventListener("click", function () {
      var text = source.textContent.trim();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(
          function () { report(true); },
          function () { report(selectAndCopy(source)); }
        );
      } else {
        report(selectAndCopy(source));
      }
    });
  });
})();
