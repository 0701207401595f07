// esbuild bundles CSS imports into the stylesheet next to the script.
declare module "*.css";
