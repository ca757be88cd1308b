-- The eleven fields of Chromium's page request (730 bytes of head in all), for wrk:
-- bench/browser.sh and BROWSER_FIELDS=1 bench/profile.sh send them with every request.
wrk.headers["User-Agent"] = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
wrk.headers["Accept"] = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"
wrk.headers["Accept-Language"] = "en-GB,en;q=0.9,de;q=0.8"
wrk.headers["Accept-Encoding"] = "gzip, deflate, br, zstd"
wrk.headers["Referer"] = "http://127.0.0.1/catalogue/index.html"
wrk.headers["Cookie"] = "session=4f2a9c1e7b3d5a8f0e6c2b9d; theme=dark; consent=1"
wrk.headers["Cache-Control"] = "max-age=0"
wrk.headers["Upgrade-Insecure-Requests"] = "1"
wrk.headers["Sec-Fetch-Dest"] = "document"
wrk.headers["Sec-Fetch-Mode"] = "navigate"
wrk.headers["Sec-Fetch-Site"] = "same-origin"
