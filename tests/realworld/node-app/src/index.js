const ms = require("ms");
const days = 2;
console.log("node app: " + days + " days is " + ms(days + "d") + " ms, ms " + require("ms/package.json").version);
