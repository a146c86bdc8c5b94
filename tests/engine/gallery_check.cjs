// Opens a catalogue gallery in headless Chromium and reports, per page, console errors,
// requests that leave the site, and for product pages whether model-viewer loaded the GLB and
// what fraction of its picture is coloured (the product drawn, not an empty stage).
//
//   NODE_PATH=/path/to/node_modules node gallery_check.cjs SITE BASE_URL CHROMIUM
//
// BASE_URL is file:///abs/SITE or http://127.0.0.1:PORT serving SITE. Needs puppeteer-core
// (npm install puppeteer-core) and a Chromium; prints one JSON object.
const puppeteer = require('puppeteer-core');
const fs = require('fs');
const path = require('path');

(async () => {
  const [site, base, chromium] = process.argv.slice(2);
  const browser = await puppeteer.launch({
    executablePath: chromium,
    headless: true,
    args: ['--no-sandbox', '--use-angle=swiftshader', '--enable-unsafe-swiftshader'],
  });
  const summary = JSON.parse(fs.readFileSync(path.join(site, 'summary.json'), 'utf8'));
  const pages = ['index.html'].concat(
    summary.products.filter((p) => p.status === 'finished').map((p) => `products/${p.slug}/index.html`));
  const result = {};
  for (const rel of pages) {
    const page = await browser.newPage();
    await page.setViewport({width: 900, height: 700});
    const errors = [];
    const outside = [];
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    page.on('pageerror', (e) => errors.push(String(e)));
    page.on('requestfailed', (r) => errors.push(`failed: ${r.url().slice(0, 200)}`));
    page.on('request', (r) => {
      const url = r.url();
      if (!(url.startsWith(base) || url.startsWith('data:') || url.startsWith('blob:'))) {
        outside.push(url.slice(0, 200));
      }
    });
    await page.goto(`${base}/${rel}`, {waitUntil: 'load'});
    const entry = {errors, outside};
    if (rel !== 'index.html') {
      entry.loaded = await page.evaluate(() => new Promise((resolve) => {
        const viewer = document.querySelector('model-viewer');
        if (!viewer) return resolve('no model-viewer');
        if (viewer.loaded) return resolve('loaded');
        viewer.addEventListener('load', () => resolve('loaded'));
        viewer.addEventListener('error', () => resolve('error'));
        setTimeout(() => resolve('timeout'), 60000);
      }));
      await new Promise((r) => setTimeout(r, 1000));
      entry.coloured = await page.evaluate(async () => {
        const viewer = document.querySelector('model-viewer');
        const img = new Image();
        img.src = viewer.toDataURL('image/png');
        await img.decode();
        const canvas = document.createElement('canvas');
        canvas.width = img.width;
        canvas.height = img.height;
        const ctx = canvas.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let coloured = 0;
        for (let i = 0; i < d.length; i += 4) {
          const hi = Math.max(d[i], d[i + 1], d[i + 2]);
          const lo = Math.min(d[i], d[i + 1], d[i + 2]);
          if (d[i + 3] > 0 && hi - lo > 40) coloured++;
        }
        return coloured / (canvas.width * canvas.height);
      });
    }
    result[rel] = entry;
    await page.close();
  }
  await browser.close();
  process.stdout.write(JSON.stringify(result));
})().catch((e) => { console.error(e); process.exit(1); });
