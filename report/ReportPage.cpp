// The page's fixed parts: its style sheet and its script (inline, so the
// page makes no request). The script only adds interactivity; everything
// it shows is in the static page already.
#include "report/ReportPage.h"

namespace kvplan::report {

const char *pageStyle() {
  return R"CSS(
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2a44;color:#fff;padding:14px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c6d0e4}
nav{position:sticky;top:0;background:#fff;border-bottom:1px solid #dde1e8;padding:6px 28px;z-index:2}
nav a{margin-right:18px;color:#2c5ecf;text-decoration:none;font-weight:600}
main{padding:8px 28px 40px;max-width:1200px}
section.part{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:4px 18px 14px;margin:16px 0}
h2{font-size:19px;border-bottom:1px solid #eceff3;padding-bottom:4px}
h3{font-size:16px;margin:18px 0 6px}p.lead{color:#4a5568;margin-top:0}
.note{background:#fff8e1;border-left:4px solid #e0a800;padding:6px 10px}
table{border-collapse:collapse;margin:6px 0}
td,th{border:1px solid #e2e6ec;padding:3px 8px;text-align:left}th{background:#f0f2f6}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td.current{background:#e8f0ff;font-weight:700}
pre{background:#fbfbfc;border:1px solid #e6e8ec;padding:8px;overflow:auto;font:12px/1.4 ui-monospace,Menlo,Consolas,monospace;max-height:520px}
details{margin:4px 0}summary{cursor:pointer;color:#2c5ecf}.ir .c{color:#7a8599}
.ir .s{color:#0f7b3a}.ir .v{color:#7b3fb5}.ir .y{color:#b5520b}
.ir .o{color:#1b4fd1;font-weight:600}.ir .t{color:#0a7f8c}.ir .a{color:#8a6d00}
.diff span{display:block;white-space:pre}.diff .da{background:#e3f7e6}
.diff .dd{background:#fde7e7}.diff .ra{background:#fff1c9}
.diff .rd{background:#f9e3c4;text-decoration:line-through;text-decoration-color:#c9a46b}
.diff .dk{color:#7a8599;background:#f2f3f6;font-style:italic}
.badge{display:inline-block;border-radius:3px;padding:0 6px;margin-right:6px;font-size:12px}
.b-add{background:#e3f7e6}.b-del{background:#fde7e7}.b-rw{background:#fff1c9}
svg text{font:11px system-ui,sans-serif;fill:#4a5568}svg .axis{stroke:#9aa3b2;stroke-width:1}
svg .grid{stroke:#eceff3}svg rect.buf{stroke:#fff;stroke-width:.4}
svg rect.buf:hover,svg rect.buf.hl{stroke:#000;stroke-width:1.2}
.legend span{display:inline-block;margin:2px 10px 2px 0}
.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}
#jserr{background:#fde7e7;padding:6px 28px}.bill-weights{fill:#4c6ef5;background:#4c6ef5}
.bill-kv{fill:#12b886;background:#12b886}.bill-arena{fill:#fab005;background:#fab005}
.bill-workspace{fill:#e64980;background:#e64980}
.bill-reserve{fill:#868e96;background:#868e96}.k-argument{fill:#adb5bd;background:#adb5bd}
.k-embedding{fill:#f59f00;background:#f59f00}.k-rms_norm{fill:#74c0fc;background:#74c0fc}
.k-add_rms_norm{fill:#339af0;background:#339af0}.k-linear{fill:#5c7cfa;background:#5c7cfa}
.k-rope{fill:#20c997;background:#20c997}.k-attention{fill:#e64980;background:#e64980}
.k-swiglu{fill:#94d82d;background:#94d82d}.k-fused_ffn{fill:#51cf66;background:#51cf66}
.k-add{fill:#ffa94d;background:#ffa94d}.k-logits{fill:#d6336c;background:#d6336c}
.k-take_last{fill:#868e96;background:#868e96}.k-convert{fill:#ced4da;background:#ced4da}
.k-kv_cache_write{fill:#099268;background:#099268}
.k-kv_cache_read{fill:#0ca678;background:#0ca678}.k-rope_kv_write{fill:#38d9a9;background:#38d9a9}
.pt-roof{stroke:#1d2a44;stroke-width:2;fill:none}.pt-model{fill:#4c6ef5;background:#4c6ef5}
.pt-measured{fill:#e03131;background:#e03131}
)CSS";
}

const char *pageEarlyScript() {
  return R"JS(
window.onerror=function(msg,src,line){document.documentElement.dataset.jsError=msg+' (line '+line+')';
var e=document.getElementById('jserr');if(e){e.textContent='JavaScript error: '+msg;e.hidden=false;}};
)JS";
}

const char *pageScript() {
  return R"JS(
(function(){
  // Clicking a buffer outlines every buffer that shares any of its bytes.
  document.querySelectorAll('svg.arena').forEach(function(svg){
    var info=svg.parentNode.querySelector('.bufinfo');
    svg.addEventListener('click',function(ev){
      var r=ev.target;if(!r.classList||!r.classList.contains('buf'))return;
      var lo=+r.dataset.offset,hi=lo+(+r.dataset.bytes),n=0;
      svg.querySelectorAll('rect.buf').forEach(function(o){
        var a=+o.dataset.offset,b=a+(+o.dataset.bytes),hit=a<hi&&lo<b;o.classList.toggle('hl',hit);if(hit)n++;});
      if(info)info.textContent=r.querySelector('title').textContent+' \u2014 '+(n-1)+' other buffer(s) reuse these bytes at other steps';
    });
  });
  // Open or close every IR listing at once.
  document.querySelectorAll('button.toggle-ir').forEach(function(b){
    b.hidden=false;
    b.addEventListener('click',function(){
      var open=b.dataset.open!=='1';b.dataset.open=open?'1':'0';
      document.querySelectorAll('details.ir-full').forEach(function(d){d.open=open;});
      b.textContent=open?'Close every IR listing':'Open every IR listing';
    });
  });
  document.documentElement.dataset.ok='1';
})();
)JS";
}

} // namespace kvplan::report
