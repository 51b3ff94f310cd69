/* The docs page's start-up (src/http/docs/index.html): Swagger UI showing
 * GET /api/v1/schema.  A file of its own: the page's Content-Security-Policy
 * allows no inline script.
 *
 * The document's `servers` names the default listen address; "Try it out" must
 * call the server that serves this page (same origin: the CSP's connect-src
 * 'self' allows nothing else, and no CORS is needed), so the page's own origin
 * replaces it.  Operations marked x-otpd-planned (not served yet, 404) say so
 * in their summary. */
"use strict";

(function () {
	var SCHEMA = "/api/v1/schema";
	var METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
	var root = document.getElementById("swagger-ui");

	function fail(message) {
		var p = document.createElement("p");
		p.className = "otpd-note";
		p.textContent = message;
		root.replaceChildren(p);
	}

	function markPlanned(spec) {
		Object.keys(spec.paths || {}).forEach(function (path) {
			var item = spec.paths[path];
			METHODS.forEach(function (m) {
				var op = item[m];
				if (op && op["x-otpd-planned"])
					op.summary = "(planned, not served yet) " + (op.summary || "");
			});
		});
	}

	fetch(SCHEMA, { headers: { Accept: "application/json" }, credentials: "same-origin" })
		.then(function (r) {
			if (!r.ok)
				throw new Error("GET " + SCHEMA + " answered " + r.status);
			return r.json();
		})
		.then(function (spec) {
			spec.servers = [{
				url: window.location.origin,
				description: "This otpd (the origin of this page)"
			}];
			markPlanned(spec);
			root.replaceChildren();
			window.ui = SwaggerUIBundle({
				spec: spec,
				domNode: root,
				deepLinking: true,
				displayRequestDuration: true,
				validatorUrl: null,
				presets: [SwaggerUIBundle.presets.apis],
				layout: "BaseLayout"
			});
		})
		.catch(function (e) {
			fail("The API document could not be shown: " + e.message);
		});
}());
